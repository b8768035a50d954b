"""Register boat_mm modules into the MODELS registry of every installed OpenMMLab toolbox: the one place
where boat_mm registers anything.

One class serves mmpretrain, mmdet and mmseg: each toolbox keeps its own MODELS registry (its
``default_scope``), so a class must be registered into each of them, and into mmengine's root registry for
code that builds without a scope. A toolbox already imported gets the class at once; the others get it
when they are first imported (an import hook on ``<toolbox>.registry``), so that ``import boat_mm``
does not import three toolboxes it may never use. Toolboxes that are not installed are never imported; a
toolbox that is installed but broken raises when it is imported, so the problem is seen rather than hidden.
"""
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from typing import List, Type

__all__ = ['TOOLBOX_SCOPES', 'register_model', 'installed_toolboxes', 'toolbox_models', 'registered_models']

TOOLBOX_SCOPES = ('mmpretrain', 'mmdet', 'mmseg')

_REGISTERED: List[Type] = []  # every class passed to register_model, in order


def installed_toolboxes() -> List[str]:
    """Scopes of the OpenMMLab toolboxes importable in this environment."""
    return [scope for scope in TOOLBOX_SCOPES if importlib.util.find_spec(scope) is not None]


def toolbox_models(scope: str):
    """The MODELS registry of toolbox ``scope`` ('mmpretrain', 'mmdet' or 'mmseg'); imports the toolbox."""
    return importlib.import_module(f'{scope}.registry').MODELS


def registered_models() -> List[Type]:
    """The classes boat_mm registers, in registration order."""
    return list(_REGISTERED)


def _register_into(registry, cls: Type) -> None:
    if registry.module_dict.get(cls.__name__) is not cls:
        registry.register_module(module=cls, force=True)


class _LoaderThatRegisters(importlib.abc.Loader):
    """The real loader of ``<toolbox>.registry``, then boat_mm's classes registered into its MODELS."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        for cls in _REGISTERED:
            _register_into(module.MODELS, cls)


class _RegisterOnToolboxImport(importlib.abc.MetaPathFinder):
    """Finds ``<toolbox>.registry`` as the other finders do and wraps its loader (``_LoaderThatRegisters``)."""
    names = frozenset(f'{scope}.registry' for scope in TOOLBOX_SCOPES)

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _LoaderThatRegisters(spec.loader)
        return spec


def _install_import_hook() -> None:
    if not any(isinstance(finder, _RegisterOnToolboxImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnToolboxImport())


def register_model(cls: Type) -> Type:
    """Class decorator: register ``cls`` under its own name in mmengine's root MODELS now, and in every
    toolbox's MODELS now (already imported) or when the toolbox is imported."""
    from mmengine.registry import MODELS as root_models
    _REGISTERED.append(cls)
    _install_import_hook()
    _register_into(root_models, cls)
    for scope in TOOLBOX_SCOPES:
        module = sys.modules.get(f'{scope}.registry')
        if module is not None and hasattr(module, 'MODELS'):
            _register_into(module.MODELS, cls)
    return cls
