"""boat_mm: BOAT (Bilateral Local Attention Vision Transformer) backbones as an OpenMMLab 2.0 plugin.

``import boat_mm`` (or ``custom_imports = dict(imports=['boat_mm'])`` in a config) applies the torch
compatibility fixes and registers ``BOATSwinTransformer`` and ``BOATCSWinTransformer`` in the MODELS
registry of every installed toolbox (mmpretrain, mmdet, mmseg).
"""
from . import compat  # noqa: F401  (must run before any checkpoint is loaded)
from .models import BOATCSWinTransformer, BOATSwinTransformer, FeatureSpaceLocalAttention

__version__ = '0.1.0'
__all__ = ['BOATSwinTransformer', 'BOATCSWinTransformer', 'FeatureSpaceLocalAttention', '__version__']
