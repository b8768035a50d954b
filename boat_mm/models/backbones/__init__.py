"""The BOAT backbones, one file each, on the shared ``BOATBackbone`` base (``base_backbone``)."""
from .base_backbone import BOATBackbone
from .boat_cswin import BOATCSWinTransformer
from .boat_swin import BOATSwinTransformer

__all__ = ['BOATBackbone', 'BOATSwinTransformer', 'BOATCSWinTransformer']
