"""Feature-space local attention (FSLA), the half of BOAT that is not window attention.

Paper: "BOAT: Bilateral Local Attention Vision Transformer", Tan Yu, Gangming Zhao, Ping Li, Yizhou Yu,
arXiv 2201.13027. Tokens are grouped per attention head by balanced hierarchical binary clustering of
their queries (``clustering``); every query attends to the keys of its own cluster plus ``overlap`` keys of
its sibling cluster (``cluster_attention``); a depthwise 3x3 convolution on v in image layout (LePE) adds
position information. Which implementation runs the clustering and the attention (C++ on CPU, fused Triton
kernels on CUDA, torch ops when traced) is ``clustering.kernel_choice``'s, switched by ``BOAT_MM_NATIVE``.
"""
import math
import numbers
from contextlib import contextmanager
from typing import List, Optional, Tuple

import torch
import torch.nn as nn

from .cluster_attention import ATTENTION_CHUNK_ELEMENTS, CLUSTER_BACKWARD_ENV, attend_within_clusters
from .clustering import (
    CACHE_CHUNK_ELEMENTS,
    DEFAULT_CLUSTER_SIZE,
    DEFAULT_KMEANS_ITERS,
    DEFAULT_OVERLAP,
    DEFAULT_TEMPERATURE,
    NORMALIZE_EPS,
    PLAN_CACHE_BYTES,
    PLAN_CACHE_ENTRIES,
    ClusterPlan,
    balanced_hierarchical_clustering,
    cluster_plan,
    num_levels_for,
    plan_clusters,
    stable_argsort,
    take_rows,
)

# The names this module had before the clustering and the cluster attention got files of their own (imports of
# them keep working; the constants are the released defaults the backbones import).
__all__ = ['FeatureSpaceLocalAttention', 'check_fsla_settings', 'ClusterPlan', 'plan_clusters', 'cluster_plan',
           'balanced_hierarchical_clustering', 'attend_within_clusters', 'stable_argsort', 'take_rows',
           'num_levels_for', 'DEFAULT_CLUSTER_SIZE', 'DEFAULT_OVERLAP', 'DEFAULT_KMEANS_ITERS',
           'DEFAULT_TEMPERATURE', 'NORMALIZE_EPS', 'CACHE_CHUNK_ELEMENTS', 'ATTENTION_CHUNK_ELEMENTS',
           'PLAN_CACHE_BYTES', 'PLAN_CACHE_ENTRIES', 'CLUSTER_BACKWARD_ENV']


def check_fsla_settings(cluster_size: int, overlap: int, kmeans_iters: int, temperature: float,
                        qk_scale: Optional[float] = None) -> None:
    """FSLA's own settings, or a ``ValueError`` naming the first bad one: integers where they count tokens or
    iterations, a finite positive temperature and scale (NaN passes a ``<= 0`` test and clusters nothing). The
    module checks them, and the backbones for every ``fsla_cfg`` (also where no stage builds FSLA)."""
    for name, value, least in (('cluster_size', cluster_size, 2), ('overlap', overlap, 0),
                               ('kmeans_iters', kmeans_iters, 0)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise ValueError(f'{name} must be an int, got {value!r}')
        if value < least:
            raise ValueError(f'{name} must be >= {least}, got {value}')
    for name, value, alternative in (('temperature', temperature, ''), ('qk_scale', qk_scale, ' (or None)')):
        if value is None and alternative:
            continue
        if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
            raise ValueError(f'{name} must be > 0 and finite{alternative}, got {value!r}')


def _contiguous_gradient(grad: torch.Tensor) -> torch.Tensor:
    """The gradient with the standard strides of its shape. ``contiguous()`` is not enough: the depthwise
    weight (C, 1, 3, 3) counts as contiguous whatever the stride of its size-1 dim, but DDP compares strides
    exactly."""
    return grad.clone(memory_format=torch.contiguous_format)


class FeatureSpaceLocalAttention(nn.Module):
    """Feature-space local attention (the ``attnC`` / ``content_attn`` of the released models).

    out = proj(attention_within_clusters(q, k, v) + lepe(v)), where clusters come from balanced
    hierarchical binary clustering of q, per head, carrying no gradient.

    Args:
        embed_dims: channels C.
        num_heads: attention heads; clustering is done independently in each.
        cluster_size: target tokens per cluster (released: 49, the 7x7 window).
        overlap: keys a cluster borrows from its sibling at the last level (released: 20).
        kmeans_iters: soft k-means iterations per split (released: 2).
        temperature: softmax temperature of the soft assignment (released: 100).
        qk_scale: attention scale; None means ``head_dim ** -0.5`` (BOAT-Swin). The released BOAT-CSWin
            models were trained with 1.0 (their code passed ``qkv_bias=True`` as the scale).
        qkv_bias: bias in the qkv projection.
        attn_drop: dropout on attention weights; proj_drop: dropout after the output projection.
    """

    def __init__(self, embed_dims: int, num_heads: int, cluster_size: int = DEFAULT_CLUSTER_SIZE,
                 overlap: int = DEFAULT_OVERLAP, kmeans_iters: int = DEFAULT_KMEANS_ITERS,
                 temperature: float = DEFAULT_TEMPERATURE, qk_scale: Optional[float] = None,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if embed_dims % num_heads != 0:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by num_heads ({num_heads})')
        check_fsla_settings(cluster_size, overlap, kmeans_iters, temperature, qk_scale)
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.cluster_size = cluster_size
        self.overlap = overlap
        self.kmeans_iters = kmeans_iters
        self.temperature = temperature
        self.scale = self.head_dims ** -0.5 if qk_scale is None else float(qk_scale)
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)
        self.lepe = nn.Conv2d(embed_dims, embed_dims, kernel_size=3, padding=1, groups=embed_dims)
        # LePE reads v as a strided view of the qkv output (a copy costs ~8% of FSLA at 50k tokens), so its
        # weight gradient comes out non-contiguous; DDP would then copy it into its bucket every step (and
        # warn that grad strides do not match bucket view strides). Make that small gradient contiguous.
        self.lepe.weight.register_hook(_contiguous_gradient)
        # Opt-in capture of the last clustering for visualisation (boat_mm.visualization): when True,
        # forward stores its permutation, plan and input tokens in ``last_clusters``.
        self.record_clusters = False
        self.last_clusters: Optional[dict] = None
        # Set by ``replaying``: a list that holds the permutation of the first forward of a checkpointed
        # block, reused when the backward recomputes that forward.
        self._replay: Optional[List[torch.Tensor]] = None

    @contextmanager
    def replaying(self, store: List[torch.Tensor]):
        """Within this context, the first forward appends its cluster permutation to ``store`` and any later
        forward (gradient checkpointing's recomputation in the backward) uses that permutation instead of
        clustering again. On a GPU non-deterministic matmuls or TF32 can cluster a recomputation differently;
        its gradients must belong to the clusters the forward used."""
        previous, self._replay = self._replay, store
        try:
            yield
        finally:
            self._replay = previous

    def extra_repr(self) -> str:
        return (f'embed_dims={self.embed_dims}, num_heads={self.num_heads}, '
                f'cluster_size={self.cluster_size}, overlap={self.overlap}, '
                f'kmeans_iters={self.kmeans_iters}, temperature={self.temperature}, scale={self.scale:g}')

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        """x: (B, N, C) tokens in raster order of an ``hw_shape`` = (H, W) map; returns (B, N, C)."""
        b, num_tokens, channels = x.shape
        height, width = hw_shape
        if num_tokens != height * width:
            raise ValueError(f'FSLA got {num_tokens} tokens for a {height}x{width} map')
        qkv = self.qkv(x).view(b, num_tokens, 3, self.num_heads, self.head_dims)
        q = qkv[:, :, 0].transpose(1, 2)  # (B, h, N, d), a view: the fused kernels read it in place
        plan = cluster_plan(num_tokens, self.cluster_size, self.overlap, x.device)
        if self._replay:  # a recomputation under gradient checkpointing: the forward's clusters
            perm = self._replay[0]
        else:
            perm = balanced_hierarchical_clustering(q, plan, self.kmeans_iters, self.temperature)
            if self._replay is not None:
                self._replay.append(perm)
        if self.record_clusters:
            self.last_clusters = dict(perm=perm.view(b, self.num_heads, -1).cpu(), hw_shape=(height, width),
                                      plan=plan_clusters(num_tokens, self.cluster_size, self.overlap),
                                      x=x.detach().float().cpu())
        dropout_p = self.attn_drop if self.training else 0.0
        out = attend_within_clusters(qkv, perm, plan, self.scale, dropout_p)
        # Channels-last strides, no copy: a contiguous copy would match the released conv bit for bit
        # but costs ~8% of FSLA at 50k tokens, and fp32 ties already rule out bit-exact parity.
        v_image = qkv[:, :, 2].reshape(b, num_tokens, channels).transpose(1, 2).reshape(
            b, channels, height, width)
        out = out + self.lepe(v_image).flatten(2).transpose(1, 2)
        return self.proj_drop(self.proj(out))
