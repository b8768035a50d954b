"""Registration: one class per backbone, built by type name from every toolbox's registry."""
import subprocess
import sys
import textwrap

import pytest
from conftest import TINY_ARCHS
from mmengine.config import Config

from boat_mm.registry import TOOLBOX_SCOPES

TINY_ARCH = {cls.__name__: arch for cls, arch in TINY_ARCHS.items()}


@pytest.mark.parametrize('scope', TOOLBOX_SCOPES)
@pytest.mark.parametrize('type_name', sorted(TINY_ARCH))
def test_builds_from_each_toolbox_registry_via_custom_imports(tmp_path, scope, type_name):
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(textwrap.dedent(f"""
        custom_imports = dict(imports=['boat_mm'], allow_failed_imports=False)
        default_scope = {scope!r}
        backbone = dict(type={type_name!r}, arch={TINY_ARCH[type_name]!r})
    """))
    cfg = Config.fromfile(str(cfg_file))  # runs custom_imports
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    model = registry.build(cfg.backbone)
    assert type(model).__name__ == type_name
    assert registry.get(type_name) is type(model)


def test_imports_with_only_some_toolboxes_installed():
    """With mmdet and mmseg hidden, boat_mm still imports and registers into mmpretrain."""
    script = textwrap.dedent("""
        import sys
        class Hide:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('mmdet', 'mmseg'):
                    raise ModuleNotFoundError(name)
                return None
        sys.meta_path.insert(0, Hide())
        import importlib.util
        _find = importlib.util.find_spec
        importlib.util.find_spec = lambda n, *a: None if n.split('.')[0] in ('mmdet', 'mmseg') else _find(n, *a)
        import boat_mm
        from boat_mm.registry import installed_toolboxes
        from mmpretrain.registry import MODELS
        assert installed_toolboxes() == ['mmpretrain'], installed_toolboxes()
        assert MODELS.get('BOATCSWinTransformer') is boat_mm.BOATCSWinTransformer
        assert 'mmdet' not in sys.modules and 'mmseg' not in sys.modules
        print('ok')
    """)
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith('ok')
