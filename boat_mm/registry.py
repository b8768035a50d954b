"""Register boat_mm modules into the MODELS registry of every installed OpenMMLab toolbox.

One class serves mmpretrain, mmdet and mmseg: each toolbox keeps its own MODELS registry (its
``default_scope``), so a class must be registered into each of them, and into mmengine's root
registry for code that builds without a scope. Toolboxes that are not installed are skipped; a
toolbox that is installed but broken raises, so the problem is seen rather than hidden.
"""
import importlib
import importlib.util
from typing import List, Type

__all__ = ['TOOLBOX_SCOPES', 'register_model', 'installed_toolboxes', 'toolbox_models']

TOOLBOX_SCOPES = ('mmpretrain', 'mmdet', 'mmseg')


def installed_toolboxes() -> List[str]:
    """Scopes of the OpenMMLab toolboxes importable in this environment."""
    return [scope for scope in TOOLBOX_SCOPES if importlib.util.find_spec(scope) is not None]


def toolbox_models(scope: str):
    """The MODELS registry of toolbox ``scope`` ('mmpretrain', 'mmdet' or 'mmseg')."""
    return importlib.import_module(f'{scope}.registry').MODELS


def _model_registries():
    from mmengine.registry import MODELS as root_models
    return [root_models] + [toolbox_models(scope) for scope in installed_toolboxes()]


def register_model(cls: Type) -> Type:
    """Class decorator: register ``cls`` under its own name in every available MODELS registry."""
    for registry in _model_registries():
        registry.register_module(module=cls)
    return cls
