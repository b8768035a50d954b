"""The layers of BOAT: feature-space local attention (``feature_space_attention``, what makes BOAT BOAT), built
from its clustering (``clustering``: plans, the torch implementation, the one switch ``kernel_choice``) and its
attention within clusters (``cluster_attention``), each also as fused kernels: for the CPU in C++
(``native_clustering`` + ``csrc/``), for CUDA in Triton (``triton_kernel_bodies``, launched by ``triton_kernels``
with ``triton_launch_configs``, as torch custom ops by ``fsla_ops``); and the transformer layers both
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
