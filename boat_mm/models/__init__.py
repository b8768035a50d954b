"""BOAT models; importing this registers the backbones in every installed toolbox."""
from .boat_cswin import BOATCSWinTransformer
from .boat_swin import BOATSwinTransformer
from .feature_space_attention import FeatureSpaceLocalAttention

__all__ = ['BOATSwinTransformer', 'BOATCSWinTransformer', 'FeatureSpaceLocalAttention']
