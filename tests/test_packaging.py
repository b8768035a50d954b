"""The package as users install it: a wheel whose metadata states the real floor (torch 2.1, mmengine 0.10)
and pins nothing, so `pip install boat_mm-*.whl` into an existing OpenMMLab environment changes no package."""
import json
import os.path as osp
import subprocess
import sys
import zipfile

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _setuptools_reads_pyproject() -> bool:
    from importlib.metadata import version
    return int(version('setuptools').split('.')[0]) >= 61  # PEP 621 [project] tables


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    if not _setuptools_reads_pyproject():  # an offline build uses the environment's setuptools
        pytest.skip('setuptools < 61 here cannot build from pyproject.toml without build isolation '
                    '(plain `pip install .` fetches a newer one in its isolated build)')
    out = tmp_path_factory.mktemp('wheel')
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(out),
                    REPO], check=True, capture_output=True, timeout=300)
    (path,) = out.glob('boat_mm-*.whl')
    return path


def test_wheel_metadata_states_the_floor_and_pins_nothing(wheel):
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith('.dist-info/METADATA'))).decode()
        names = archive.namelist()
    requires = [line.split(':', 1)[1].strip() for line in metadata.splitlines() if line.startswith('Requires-Dist:')]
    core = [r for r in requires if 'extra ==' not in r]
    assert sorted(core) == ['mmengine>=0.10', 'torch>=2.1']
    assert not [r for r in requires if '==' in r.split(';')[0] and 'extra ==' not in r]  # no pin outside extras
    assert 'boat_mm/models/layers/csrc/hierarchical_clustering.cpp' in names  # the native kernel builds on first use
    assert 'boat_mm/utils/torch_features.py' in names and 'boat_mm/testing/arithmetic.py' in names


def test_installing_the_wheel_changes_no_installed_package(wheel):
    """pip's own plan (--dry-run --report) for this environment: boat_mm and nothing else."""
    report = subprocess.run([sys.executable, '-m', 'pip', 'install', '--dry-run', '--no-index', '--quiet',
                             '--report', '-', str(wheel)], capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    planned = [item['metadata']['name'] for item in json.loads(report.stdout)['install']]
    assert planned == ['boat_mm']
