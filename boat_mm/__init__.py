"""boat_mm: BOAT (Bilateral Local Attention Vision Transformer) backbones as an OpenMMLab 2.0 plugin.

``import boat_mm`` (or ``custom_imports = dict(imports=['boat_mm'])`` in a config) applies the checkpoint
I/O fixes (``boat_mm.utils.checkpoint``) and registers ``BOATSwinTransformer`` and ``BOATCSWinTransformer``
in mmengine's MODELS and in the MODELS registry of every installed toolbox (mmpretrain, mmdet, mmseg) as it
is imported (``boat_mm.registry``); it imports none of the toolboxes itself. The package follows the
OpenMMLab layout: ``models`` (backbones, layers, utils, test_time_augs), ``apis``, ``engine``,
``analysis``, ``visualization``, ``utils``, ``testing``; pre-layout module names still import
(``boat_mm.utils.moved_modules``).
"""
from .utils import moved_modules
from .utils.checkpoint import install_checkpoint_io

install_checkpoint_io()  # before any checkpoint is loaded
moved_modules.install()

from .models import BOATCSWinTransformer, BOATSwinTransformer, FeatureSpaceLocalAttention  # noqa: E402

__version__ = '0.1.0'
__all__ = ['BOATSwinTransformer', 'BOATCSWinTransformer', 'FeatureSpaceLocalAttention', '__version__']
