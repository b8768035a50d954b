"""The resource report of FSLA's Triton kernels (issue 39), compiled here for GPUs that are not here: every
kernel the launcher would run compiles for every architecture it is enabled on, keeps no stack (spills) on
sm_80 and sm_90, and fits the architecture's shared memory; and the check catches the configuration that
spilled before (so it can fail). Compiled results are cached between runs (``~/.cache/boat_mm``)."""
import os
import subprocess
import sys

import pytest
from conftest import REPO

from boat_mm.analysis import kernel_resources as resources
from boat_mm.models.layers import triton_kernels
from boat_mm.models.layers import triton_launch_configs as configs

pytestmark = pytest.mark.skipif(triton_kernels.triton is None or triton_kernels.TRITON_VERSION < (3, 0),
                                reason='compiling for NVIDIA GPUs needs triton >= 3.0')
CACHE = os.path.join(os.path.expanduser('~'), '.cache', 'boat_mm', 'kernel_resources')
ARITHMETICS = ('fp32', 'tf32', 'bf16', 'fp16')  # what training runs in (fp64: the tests, interpreted)
WORKERS = 2


def _launched_cases():
    """The fast subset: the attention kernels (the ones that spilled) for every enabled (architecture,
    arithmetic) at the released head dim and both cluster sizes; the clustering kernels on sm_80 and sm_90."""
    cases = [case for case in resources.report_cases(arithmetics=ARITHMETICS, head_dims=(32,),
                                                     kernels=resources.ATTENTION_KERNELS)
             if configs.fused_supported(case['arch'], case['arithmetic'])]
    cases += resources.report_cases(archs=resources.SPILL_FREE_ARCHS, arithmetics=('fp32', 'bf16'), head_dims=(32,),
                                    kernels=('_split_keys', '_apply_order', '_add_borrowed'))
    return cases


def test_every_launched_kernel_compiles_without_spills_and_fits():
    rows = resources.resource_report(_launched_cases(), CACHE, WORKERS)
    assert all(row['compiled'] for row in rows), [row for row in rows if not row['compiled']][:3]
    assert resources.violations(rows) == []
    attention = [row for row in rows if row['kernel'] in resources.ATTENTION_KERNELS and row['arch'] in (80, 90)]
    assert attention and all(row['stack'] == 0 for row in attention)


def test_the_check_catches_the_configuration_that_spilled(monkeypatch):
    """The launch configuration before issue 39 (one 128-key tile, 4 warps; here: 32-key blocks, 4 warps) keeps
    a stack on sm_80 with IEEE fp32 products: the report must say so."""
    monkeypatch.setattr(configs, 'ATTENTION_CONFIG', configs.AttentionConfig(block_k=32, num_warps=4,
                                                                             num_stages=2))
    case = dict(kernel='_attention_backward', arch=80, arithmetic='fp32', head_dim=32, slots=49)
    row = resources.compile_case(case, cache_dir=None)
    assert row['compiled'] and row['stack'] > 0
    assert any('B of stack per thread' in problem for problem in resources.violations([row]))


def test_shared_memory_over_the_limit_is_a_violation():
    row = dict(kernel='_attention_backward', arch=75, arithmetic='fp32', head_dim=32, slots=49, compiled=True,
               registers=100, stack=0, shared=80 * 1024, shared_limit=configs.SHARED_MEMORY_LIMIT[75])
    assert resources.violations([row]) == [
        '_attention_backward sm_75 fp32 head_dim 32 slots 49: 81920 B of shared memory, over the 65536 B limit']


def test_benchmark_script_prints_the_table_and_writes_json(tmp_path):
    """``benchmarks/kernel_resources.py`` on a small subset (cached): the table, the verdict, the JSON."""
    out = tmp_path / 'resources.json'
    result = subprocess.run([sys.executable, 'benchmarks/kernel_resources.py', '--archs', '90', '--arithmetics',
                             'fp32', '--head-dims', '32', '--slots', '49', '--kernels', '_attention_forward',
                             '--json', str(out), '--workers', '1', '--cache-dir', CACHE], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '| attention_forward | fp32 | 32 | 49 |' in result.stdout
    assert '0 violation(s)' in result.stdout
    assert out.exists()
