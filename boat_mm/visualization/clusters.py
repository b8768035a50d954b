"""See what BOAT groups: capture an FSLA block's clusters and draw them over the image.

The capture goes through the FSLA module's opt-in ``record_clusters`` switch, which stores the
permutation the module itself computed (no second implementation of the clustering here).
"""
import colorsys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..models.layers.feature_space_attention import ClusterPlan, FeatureSpaceLocalAttention

__all__ = ['fsla_blocks', 'capture_clusters', 'token_clusters', 'cluster_members', 'attention_to_keys',
           'distinct_colours', 'paint_clusters', 'draw_figure']

GOLDEN_RATIO_CONJUGATE = 0.618033988749895
PANEL_INCHES = 4.0
FIGURE_DPI = 100
TITLE_INCHES = 0.6
PALETTE_COLOURS = 256


def fsla_blocks(backbone) -> List[Tuple[int, int]]:
    """(stage, block) indices (0-based) of every block that carries FSLA."""
    return [(s, b) for s, stage in enumerate(backbone.stages) for b, block in enumerate(stage.blocks)
            if getattr(block, 'fsla', None) is not None]


def capture_clusters(backbone, inputs: torch.Tensor, stage: int, block: int) -> Dict:
    """Run ``backbone`` on ``inputs`` (1, 3, H, W) and return what FSLA block (stage, block) recorded:
    ``perm`` (heads, M), ``plan``, ``hw_shape`` and its input tokens ``x`` (N, C)."""
    blocks = backbone.stages[stage].blocks
    if not 0 <= block < len(blocks) or getattr(blocks[block], 'fsla', None) is None:
        raise ValueError(f'stage {stage} block {block} has no FSLA; FSLA blocks are {fsla_blocks(backbone)}')
    module: FeatureSpaceLocalAttention = blocks[block].fsla
    module.record_clusters = True
    try:
        with torch.no_grad():
            backbone(inputs)
    finally:
        module.record_clusters = False
    record = dict(module.last_clusters)
    record['perm'] = record['perm'][0]  # first (only) image
    record['x'] = record['x'][0]
    record['module'] = module
    return record


def token_clusters(perm: torch.Tensor, plan: ClusterPlan) -> torch.Tensor:
    """Cluster id of every real token (N,), from one head's permutation (M,). Raises unless every real
    token is in exactly one cluster."""
    num_tokens = plan.num_tokens
    ids = torch.full((num_tokens,), -1, dtype=torch.long)
    slots = torch.arange(plan.num_slots)
    real = perm < num_tokens
    tokens = perm[real]
    if tokens.numel() != num_tokens or torch.unique(tokens).numel() != num_tokens:
        raise ValueError('the permutation does not place every real token exactly once')
    ids[tokens] = slots[real] // plan.slots_per_cluster
    return ids


def cluster_members(perm: torch.Tensor, plan: ClusterPlan, token: int) -> Tuple[List[int], List[int]]:
    """(tokens of ``token``'s cluster, tokens its queries also see through the sibling overlap)."""
    num_tokens = plan.num_tokens
    slot = int((perm == token).nonzero()[0, 0])
    cluster = slot // plan.slots_per_cluster
    keys = perm[plan.key_index[cluster]][plan.key_valid[cluster]]
    own = perm[cluster * plan.slots_per_cluster:(cluster + 1) * plan.slots_per_cluster]
    own = sorted(int(t) for t in own if t < num_tokens)
    overlap = sorted(int(t) for t in keys.tolist() if t not in set(own))
    return own, overlap


def attention_to_keys(record: Dict, head: int, token: int) -> Tuple[List[int], np.ndarray]:
    """The FSLA attention weights of query ``token`` in ``head`` over its keys (cluster + overlap)."""
    module: FeatureSpaceLocalAttention = record['module']
    own, overlap = cluster_members(record['perm'][head], record['plan'], token)
    keys = own + overlap
    with torch.no_grad():
        qkv = module.qkv(record['x'].to(module.qkv.weight.dtype))
        q, k, _ = qkv.view(qkv.shape[0], 3, module.num_heads, module.head_dims).unbind(1)
        weights = torch.softmax(k[keys, head] @ q[token, head] * module.scale, dim=0)
    return keys, weights.numpy()


def distinct_colours(count: int, seed: int = 0) -> np.ndarray:
    """``count`` visibly different, pairwise distinct RGB colours (uint8)."""
    colours, seen = [], set()
    hue = (seed * GOLDEN_RATIO_CONJUGATE) % 1.0
    i = 0
    while len(colours) < count:
        saturation = 0.55 + 0.4 * ((i // 3) % 2)
        value = 0.95 - 0.3 * (i % 3) / 2
        rgb = tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(hue, saturation, value))
        if rgb not in seen:
            seen.add(rgb)
            colours.append(rgb)
        hue = (hue + GOLDEN_RATIO_CONJUGATE) % 1.0
        i += 1
    return np.array(colours, dtype=np.uint8).reshape(-1, 3)


def paint_clusters(cluster_ids: torch.Tensor, hw_shape: Sequence[int], num_clusters: int) -> np.ndarray:
    """(H, W, 3) uint8 token map: each token painted once, in its cluster's colour."""
    palette = distinct_colours(num_clusters)
    return palette[cluster_ids.view(*hw_shape).numpy()]


def _token_extent(hw_shape, image_hw):
    """Pixel size of one token and the image extent covered by the token grid (it may overhang)."""
    stride_h = image_hw[0] / hw_shape[0]
    stride_w = image_hw[1] / hw_shape[1]
    stride = max(round(stride_h), round(stride_w), 1)
    return stride, (0, hw_shape[1] * stride, hw_shape[0] * stride, 0)


def draw_figure(image: np.ndarray, record: Dict, head: int, out_path: str, grid: Optional[Dict] = None,
                point: Optional[Tuple[int, int]] = None, title: str = '') -> Dict:
    """Draw image + windows/stripes, the clusters of ``head``, and (with ``point``) the selected
    query's cluster, overlap and attention weights. Returns what was drawn (for tests and captions)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    plan, hw_shape = record['plan'], record['hw_shape']
    ids = token_clusters(record['perm'][head], plan)
    colours = paint_clusters(ids, hw_shape, plan.num_clusters)
    stride, extent = _token_extent(hw_shape, image.shape[:2])
    panels = 3 if point is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(PANEL_INCHES * panels, PANEL_INCHES + TITLE_INCHES),
                             dpi=FIGURE_DPI)
    for ax in axes:
        ax.imshow(image)
        ax.set_xlim(0, image.shape[1])
        ax.set_ylim(image.shape[0], 0)
        ax.set_xticks([])
        ax.set_yticks([])

    grid = grid or {}
    for y in grid.get('rows', []):
        axes[0].axhline(y * stride, color='white', lw=0.5, alpha=0.7)
    for x in grid.get('cols', []):
        axes[0].axvline(x * stride, color='white', lw=0.5, alpha=0.7)
    axes[0].set_title(grid.get('label', 'image'), fontsize=9)

    axes[1].imshow(colours, extent=extent, alpha=0.6, interpolation='nearest')
    axes[1].set_title(f'feature-space clusters, head {head}\n{plan.num_clusters} clusters of '
                      f'~{plan.slots_per_cluster} of {plan.num_tokens} tokens', fontsize=9)
    drawn = dict(cluster_ids=ids, colours=colours, num_clusters=plan.num_clusters, panels=panels)

    if point is not None:
        col = min(int(point[0] // stride), hw_shape[1] - 1)
        row = min(int(point[1] // stride), hw_shape[0] - 1)
        token = row * hw_shape[1] + col
        own, overlap = cluster_members(record['perm'][head], plan, token)
        keys, weights = attention_to_keys(record, head, token)
        highlight = np.zeros((*hw_shape, 4))
        highlight[..., 3] = 0.55  # grey veil over the tokens the query does not see
        highlight.reshape(-1, 4)[own] = (1.0, 0.85, 0.0, 0.9)
        highlight.reshape(-1, 4)[overlap] = (0.0, 0.8, 1.0, 0.9)
        axes[1].imshow(highlight, extent=extent, interpolation='nearest')
        heat = np.full(hw_shape[0] * hw_shape[1], np.nan)
        heat[keys] = weights
        shown = axes[2].imshow(heat.reshape(hw_shape), extent=extent, cmap='inferno', alpha=0.8,
                               interpolation='nearest')
        fig.colorbar(shown, ax=axes[2], fraction=0.046, pad=0.02)
        for ax in axes:
            ax.plot([point[0]], [point[1]], marker='+', color='red', markersize=12, mew=2)
        axes[2].set_title(f'attention of the marked patch over its {len(keys)} keys', fontsize=9)
        axes[1].legend(handles=[Patch(color=(1.0, 0.85, 0.0), label=f'its cluster ({len(own)})'),
                                Patch(color=(0.0, 0.8, 1.0), label=f'sibling overlap ({len(overlap)})')],
                       loc='lower right', fontsize=7)
        drawn.update(token=token, members=own, overlap=overlap, highlight=highlight)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.93 if point is not None else 0.99, bottom=0.01,
                        top=PANEL_INCHES / (PANEL_INCHES + TITLE_INCHES), wspace=0.05)
    _save_compact_png(fig, out_path)
    plt.close(fig)
    return drawn


def _save_compact_png(fig, out_path: str) -> None:
    """Save as a 256-colour palette PNG: noisy photos make full-colour figures several times larger."""
    import io

    from PIL import Image
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=FIGURE_DPI, format='png')
    buffer.seek(0)
    image = Image.open(buffer).convert('RGB')
    image.quantize(colors=PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        out_path, optimize=True)
