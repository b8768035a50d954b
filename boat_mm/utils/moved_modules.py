"""The module names boat_mm had before its OpenMMLab layout, and where their contents live now.

``from boat_mm.training import load_config``, ``import boat_mm.det_tta`` in a config's ``custom_imports``
and every other pre-layout import keep working, with a ``DeprecationWarning`` naming the new home. A
module that moved whole is the same module object under both names (its classes keep one identity, so
registries and ``isinstance`` see one class); a module whose contents were split is rebuilt under its old
name from the public names of its new homes. The finder is installed by ``import boat_mm``.
"""
import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Dict, Tuple

__all__ = ['MOVED_MODULES', 'RENAMED', 'install']

MOVED_MODULES: Dict[str, Tuple[str, ...]] = {
    'boat_mm.compat': ('boat_mm.utils.checkpoint', 'boat_mm.utils.file_io', 'boat_mm.utils.setup_env'),
    'boat_mm.env': ('boat_mm.utils.setup_env',),
    'boat_mm.cpu_memory': ('boat_mm.utils.setup_env',),
    'boat_mm.converters': ('boat_mm.models.utils.ckpt_convert', 'boat_mm.apis.checkpoint_conversion'),
    'boat_mm.training': ('boat_mm.engine.runner_setup', 'boat_mm.utils.datasets', 'boat_mm.utils.model_builder',
                         'boat_mm.engine.hooks.train_setup_hook'),
    'boat_mm.evaluation': ('boat_mm.engine.test_options', 'boat_mm.utils.datasets'),
    'boat_mm.det_tta': ('boat_mm.models.test_time_augs.det_tta',),
    'boat_mm.cls_visualization': ('boat_mm.engine.hooks.visualization_hook',),
    'boat_mm.image_demo': ('boat_mm.apis.inference',),
    'boat_mm.deployment': ('boat_mm.apis.deployment',),
    'boat_mm.publish': ('boat_mm.apis.publish',),
    'boat_mm.model_benchmark': ('boat_mm.analysis.benchmark',),
    'boat_mm.runs': ('boat_mm.analysis.runs',),
    'boat_mm.demo_data': ('boat_mm.testing.demo_data',),
    'boat_mm.models.base_backbone': ('boat_mm.models.backbones.base_backbone',),
    'boat_mm.models.boat_swin': ('boat_mm.models.backbones.boat_swin',),
    'boat_mm.models.boat_cswin': ('boat_mm.models.backbones.boat_cswin',),
    'boat_mm.models.feature_space_attention': ('boat_mm.models.layers.feature_space_attention',),
    'boat_mm.models.native_clustering': ('boat_mm.models.layers.native_clustering',),
    'boat_mm.models.toolbox_args': ('boat_mm.models.utils.toolbox_args',),
}
# (old module, old name) -> (new module, new name): names that changed, not only their module.
RENAMED: Dict[Tuple[str, str], Tuple[str, str]] = {
    ('boat_mm.training', 'build_model_without_weights'): ('boat_mm.utils.model_builder', 'build_model'),
}


def _public_names(module: types.ModuleType):
    return getattr(module, '__all__', None) or [name for name in vars(module) if not name.startswith('_')]


class _MovedModuleLoader(importlib.abc.Loader):
    def __init__(self, old_name: str):
        self.old_name = old_name
        self.homes = MOVED_MODULES[old_name]

    def create_module(self, spec):
        warnings.warn(f'{self.old_name} moved to {" / ".join(self.homes)} (boat_mm\'s OpenMMLab layout); '
                      'import it from there', DeprecationWarning, stacklevel=4)
        if len(self.homes) == 1:  # moved whole: the very module, under its old name too
            module = importlib.import_module(self.homes[0])
            self._own_spec = module.__spec__
            return module
        return None  # split: a module of its own, filled in by exec_module

    def exec_module(self, module) -> None:
        if len(self.homes) == 1:
            module.__spec__ = self._own_spec  # the import system set it to the old name's spec
            return
        module.__doc__ = f'Pre-layout name of {", ".join(self.homes)}.'
        exported = []
        for home in self.homes:
            new = importlib.import_module(home)
            for name in _public_names(new):
                setattr(module, name, getattr(new, name))
                exported.append(name)
        for (old_module, old_name), (new_module, new_name) in RENAMED.items():
            if old_module == self.old_name:
                setattr(module, old_name, getattr(importlib.import_module(new_module), new_name))
                exported.append(old_name)
        module.__all__ = exported


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in MOVED_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedModuleLoader(fullname))


def install() -> None:
    """Make the pre-layout module names importable (idempotent)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())
