"""Parameters and FLOPs of BOAT models, counting what a generic counter misses in FSLA.

Convention (as mmengine / fvcore and the OpenMMLab model zoos): one multiply-add = one FLOP.

A jit-tracing counter (mmengine's ``FlopAnalyzer``) sees the linear layers and matmuls it knows, but
not FSLA's fused attention, nor its clustering. So the model total is the generic count with every
FSLA module's subtree replaced by ``fsla_flops``, a closed formula of the same computation:

- projections: qkv ``3 N C^2``, output ``N C^2``; LePE depthwise 3x3: ``9 N C``;
- attention inside clusters: every query against ``K`` keys (cluster + overlap, 49 + 20 = 69 when
  released; all N when one cluster), for q k^T and for attn v: ``2 M K C`` (M = N padded to the plan);
- clustering, per split level: normalising q once ``M C``; initial centroids ``M C``; per soft k-means
  iteration, scores ``2 M C`` and centroid update ``2 M C``; final scores ``2 M C``; sorting counted as
  ``M log2(group size)`` comparisons per head.
"""
import math
from typing import Dict, List, Tuple

import torch
import torch.nn as nn

from ..models.layers.feature_space_attention import (
    DEFAULT_CLUSTER_SIZE,
    DEFAULT_KMEANS_ITERS,
    DEFAULT_OVERLAP,
    FeatureSpaceLocalAttention,
    plan_clusters,
)

__all__ = ['fsla_flops', 'count_complexity', 'complexity_of_config', 'DEFAULT_SHAPES']

# Input of a FLOP count when none is given: the toolboxes' model-zoo conventions per task.
DEFAULT_SHAPES = {'mmpretrain': (224, 224), 'mmseg': (512, 512), 'mmdet': (800, 1280)}

LEPE_KERNEL_AREA = 9
SCORE_COLUMNS = 2  # two centroids per binary split


def fsla_flops(num_tokens: int, embed_dims: int, num_heads: int, cluster_size: int = DEFAULT_CLUSTER_SIZE,
               overlap: int = DEFAULT_OVERLAP, kmeans_iters: int = DEFAULT_KMEANS_ITERS) -> Dict[str, int]:
    """FLOPs of one FSLA call on one image of ``num_tokens`` tokens, by part (see module docstring)."""
    plan = plan_clusters(num_tokens, cluster_size, overlap)
    n, c, slots = num_tokens, embed_dims, plan.num_slots
    keys = plan.key_index.shape[1]
    parts = dict(qkv=3 * n * c * c, proj=n * c * c, lepe=LEPE_KERNEL_AREA * n * c,
                 attention=2 * slots * keys * c)
    clustering = 0
    if plan.num_levels:
        clustering += slots * c  # normalising q once
        for level in range(plan.num_levels):
            group_size = slots >> level
            clustering += slots * c  # initial centroids (half means)
            clustering += kmeans_iters * 2 * SCORE_COLUMNS * slots * c  # scores + centroid updates
            clustering += SCORE_COLUMNS * slots * c  # final scores
            clustering += num_heads * slots * int(math.log2(group_size))  # sort comparisons
    parts['clustering'] = clustering
    parts['total'] = sum(parts.values())
    return parts


class _TensorForward(nn.Module):
    """Runs a toolbox model in ``mode='tensor'`` so that a tracer sees a plain tensor -> tensors call."""

    def __init__(self, model: nn.Module, data_samples=None):
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs):
        if hasattr(self.model, 'data_preprocessor') and self.data_samples is not None:
            return self.model(inputs, self.data_samples, mode='tensor')
        if hasattr(self.model, 'data_preprocessor'):
            return self.model(inputs, mode='tensor')
        return self.model(inputs)


def _fsla_calls(model: nn.Module, inputs: torch.Tensor) -> List[Tuple[str, FeatureSpaceLocalAttention, int]]:
    """(name, module, tokens per image) for every FSLA call of one forward pass."""
    calls = []
    hooks = [module.register_forward_hook(
        lambda mod, args, out, name=name: calls.append((name, mod, args[0].shape[1])))
        for name, module in model.named_modules() if isinstance(module, FeatureSpaceLocalAttention)]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def count_complexity(model: nn.Module, inputs: torch.Tensor, data_samples=None) -> Dict[str, int]:
    """Parameters and FLOPs (per image batch ``inputs``) of any boat_mm model, FSLA counted in full."""
    from mmengine.analysis import FlopAnalyzer
    wrapped = _TensorForward(model, data_samples).eval()
    batch = inputs.shape[0]
    calls = _fsla_calls(wrapped, inputs)
    analyzer = FlopAnalyzer(wrapped, (inputs,))
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings('none')
    generic_total = analyzer.total()
    by_module = analyzer.by_module()
    generic_in_fsla = sum(by_module.get(name, 0) for name in {name for name, _, _ in calls})
    fsla_total = sum(batch * fsla_flops(n, m.embed_dims, m.num_heads, m.cluster_size, m.overlap,
                                        m.kmeans_iters)['total'] for _, m, n in calls)
    return dict(params=sum(p.numel() for p in model.parameters()), flops=generic_total - generic_in_fsla + fsla_total,
                fsla_flops=fsla_total, generic_flops_seen_in_fsla=generic_in_fsla, fsla_calls=len(calls))


def _det_samples(height: int, width: int) -> list:
    from mmdet.structures import DetDataSample
    meta = dict(img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width),
                batch_input_shape=(height, width), scale_factor=(1.0, 1.0))
    return [DetDataSample(metainfo=meta)]


def complexity_of_config(config: str, shape=None) -> Dict[str, object]:
    """``count_complexity`` of a config's model (no weights needed) at ``shape`` = (H, W), by default the
    task's ``DEFAULT_SHAPES``; adds ``shape`` and ``scope`` to the result."""
    from ..utils.model_builder import build_model
    cfg, model = build_model(config)
    scope = cfg.get('default_scope', 'mmpretrain')
    height, width = shape or DEFAULT_SHAPES[scope]
    samples = _det_samples(height, width) if scope == 'mmdet' else None
    stats = count_complexity(model, torch.zeros(1, 3, height, width), samples)
    return dict(stats, shape=(height, width), scope=scope)
