"""The layers of BOAT: feature-space local attention (``feature_space_attention``, what makes BOAT BOAT),
its fused CPU clustering kernel (``native_clustering`` + ``csrc/``) and the transformer layers both
backbones share (``transformer_layers``, whose names this package also exports)."""
from .feature_space_attention import FeatureSpaceLocalAttention
from .transformer_layers import (
    NORM_LAYERS,
    CacheInfo,
    DropPath,
    Mlp,
    cache_outside_tracing,
    freeze,
    is_tracing,
    pad_to_multiple,
    parse_arch,
    tensor_bytes,
    tokens_to_nchw,
)

__all__ = ['FeatureSpaceLocalAttention', 'DropPath', 'Mlp', 'pad_to_multiple', 'tokens_to_nchw', 'freeze',
           'NORM_LAYERS', 'parse_arch', 'is_tracing', 'cache_outside_tracing', 'tensor_bytes', 'CacheInfo']
