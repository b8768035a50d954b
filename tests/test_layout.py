"""The package in OpenMMLab's layout: a light ``import boat_mm``, no import cycle, nothing private used
across modules, and every pre-layout import still working (with a warning naming the new home)."""
import ast
import importlib
import json
import os
import os.path as osp
import subprocess
import sys
import textwrap
import warnings

import pytest
from conftest import REPO

from boat_mm.utils.moved_modules import MOVED_MODULES

PACKAGE = osp.join(REPO, 'boat_mm')
PRE_LAYOUT_NAMES = json.load(open(osp.join(REPO, 'tests', 'data', 'pre_layout_names.json')))
TOOLBOXES = ('mmdet', 'mmseg', 'mmpretrain')
# Subpackages of the OpenMMLab layout (README "Layout").
LAYOUT = ('models/backbones', 'models/layers', 'models/utils', 'models/test_time_augs', 'apis', 'engine/hooks',
          'analysis', 'visualization', 'utils', 'testing')


def _run(script: str) -> str:
    result = subprocess.run([sys.executable, '-c', textwrap.dedent(script)], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _modules():
    """(dotted name, path) of every module of the package."""
    for root, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith('.py'):
                path = osp.join(root, name)
                dotted = osp.relpath(path, REPO)[:-3].replace(os.sep, '.')
                yield dotted[:-len('.__init__')] if dotted.endswith('.__init__') else dotted, path


def _imports(dotted: str, path: str, top_level_only: bool):
    """(imported module, names) of the boat_mm imports of one module, relative ones resolved."""
    tree = ast.parse(open(path).read())
    package = dotted if path.endswith('__init__.py') else dotted.rsplit('.', 1)[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                module = '.'.join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ''
            if module.split('.')[0] == 'boat_mm':
                yield module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split('.')[0] == 'boat_mm':
                    yield alias.name, []


def test_the_tree_has_the_openmmlab_layout():
    missing = [sub for sub in LAYOUT if not osp.isfile(osp.join(PACKAGE, sub, '__init__.py'))]
    assert not missing, missing
    flat = sorted(name for name in os.listdir(PACKAGE) if name.endswith('.py'))
    assert flat == ['__init__.py', 'registry.py'], f'modules beside the subpackages: {flat}'


def test_no_import_cycle():
    """Imports between boat_mm modules form no cycle, deferred (function-level) imports included: a
    deferred import that only breaks a cycle at import time is still a cycle of the design."""
    modules = dict(_modules())
    graph = {}
    for dotted, path in modules.items():
        targets = set()
        for module, names in _imports(dotted, path, top_level_only=False):
            for candidate in [f'{module}.{name}' for name in names] + [module]:
                if candidate in modules:
                    targets.add(candidate)
                    break
        graph[dotted] = targets - {dotted}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = 'open'
        for target in graph[node]:
            if node.startswith(target + '.'):  # a module naming its own package (``from .. import x``)
                continue
            if state.get(target) == 'open':
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = 'done'
    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_nothing_private_is_imported_across_modules():
    offenders = [f'{dotted}: from {module} import {name}'
                 for dotted, path in _modules() for module, names in _imports(dotted, path, top_level_only=False)
                 for name in names if name.startswith('_') and module != dotted]
    assert not offenders, offenders


def test_our_own_code_uses_no_pre_layout_name():
    """boat_mm, the tools, benchmarks and tests import every module from its new home (the old names are for
    users' code and configs)."""
    offenders = []
    for top in ('boat_mm', 'tools', 'benchmarks', 'tests'):
        for root, _, files in os.walk(osp.join(REPO, top)):
            for name in files:
                path = osp.join(root, name)
                if not name.endswith('.py') or name == 'moved_modules.py' or name == 'test_layout.py':
                    continue
                dotted = osp.relpath(path, REPO)[:-3].replace(os.sep, '.')
                for module, names in _imports(dotted, path, top_level_only=False):
                    used = [module] + [f'{module}.{n}' for n in names]
                    offenders += [f'{dotted}: {u}' for u in used if u in MOVED_MODULES]
    assert not offenders, offenders


def test_import_boat_mm_and_utility_modules_import_no_toolbox():
    out = _run(f"""
        import sys
        import boat_mm
        import boat_mm.testing.demo_data, boat_mm.models.utils.ckpt_convert, boat_mm.utils.checkpoint
        import boat_mm.analysis.runs, boat_mm.utils.datasets
        print(sorted(name for name in {TOOLBOXES!r} if name in sys.modules))
    """)
    assert out.strip() == '[]'


def test_toolbox_imported_later_gets_the_backbones():
    """``import boat_mm`` before a toolbox: the toolbox's MODELS gets the backbones when it is imported."""
    out = _run("""
        import boat_mm
        from mmdet.registry import MODELS as det
        from mmseg.registry import MODELS as seg
        from mmpretrain.registry import MODELS as cls
        print(all(r.module_dict.get(n) is getattr(boat_mm, n) for r in (det, seg, cls)
                  for n in ('BOATSwinTransformer', 'BOATCSWinTransformer')))
    """)
    assert out.strip() == 'True'


@pytest.mark.parametrize('old', sorted(PRE_LAYOUT_NAMES))
def test_every_pre_layout_name_still_imports(old):
    if old.endswith(('det_tta', 'cls_visualization')):
        pytest.importorskip('mmdet' if old.endswith('det_tta') else 'mmpretrain')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        module = importlib.import_module(old)
    missing = [name for name in PRE_LAYOUT_NAMES[old] if not hasattr(module, name)]
    assert not missing, f'{old} lost {missing}'


def test_a_module_moved_whole_is_the_same_module_and_warns():
    out = _run("""
        import warnings
        warnings.simplefilter('always')
        with warnings.catch_warnings(record=True) as caught:
            import boat_mm.demo_data as old
        import boat_mm.testing.demo_data as new
        print(old is new, new.__spec__.name, [str(w.message) for w in caught if w.category is DeprecationWarning])
    """)
    assert out.startswith('True boat_mm.testing.demo_data'), out
    assert 'boat_mm.demo_data moved to boat_mm.testing.demo_data' in out


def test_moved_modules_table_names_real_modules():
    for old, homes in MOVED_MODULES.items():
        assert not osp.exists(osp.join(REPO, *old.split('.')) + '.py'), f'{old} still exists: it is not moved'
        for home in homes:
            assert osp.isfile(osp.join(REPO, *home.split('.')) + '.py'), f'{old} -> {home}: no such module'
