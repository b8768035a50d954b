"""Feature-space local attention (FSLA), the half of BOAT that is not window attention.

Paper: "BOAT: Bilateral Local Attention Vision Transformer", Tan Yu, Gangming Zhao, Ping Li, Yizhou Yu,
arXiv 2201.13027. Tokens are grouped per attention head by balanced hierarchical binary clustering of
their queries; every query attends to the keys of its own cluster plus ``overlap`` keys of its sibling
cluster; a depthwise 3x3 convolution on v in image layout (LePE) adds position information.

The released models only ever saw ``N = cluster_size * 2**K`` tokens. For any other ``N`` this module
pads the token set to ``2**K * s`` slots (``s = ceil(N / 2**K)``) with *pad slots* that are excluded
from every centroid, always sort last and are never attended to, so that no pad value can reach a real
token's output. Pad slots are spread evenly over the tree (at most one per leaf cluster), which keeps
every cluster within ``[cluster_size / 2, 2 * cluster_size]`` real tokens. Because the number of pad
slots in every group is fixed by ``N`` alone, all index bookkeeping for them is static and cached.

Clustering has two implementations with the same clusters: in eager CPU runs a fused C++ kernel
(``native_clustering``, depth first, O(n) partitions per split), elsewhere (GPU, torch.compile /
torch.export / ONNX tracing, or no compiler) the torch code below, which batches every level over all
groups, with shapes fixed by N alone and no host-device synchronisation.
"""
import math
import os
from contextlib import contextmanager
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...utils.torch_features import autocast_available, constant_under_compile, is_compiling
from .native_clustering import cluster_native
from .transformer_layers import cache_outside_tracing, is_tracing

__all__ = ['FeatureSpaceLocalAttention', 'ClusterPlan', 'plan_clusters', 'cluster_plan',
           'balanced_hierarchical_clustering', 'attend_within_clusters', 'stable_argsort', 'take_rows',
           'num_levels_for']

# Released hyper-parameters (BOAT-Swin and BOAT-CSWin alike).
DEFAULT_CLUSTER_SIZE = 49
DEFAULT_OVERLAP = 20
DEFAULT_KMEANS_ITERS = 2
DEFAULT_TEMPERATURE = 100.0
# Query floats (16 MiB) above which clustering is finished in chunks of this size: small enough to stay
# in a CPU's last-level cache (half of the 32 MiB L3 of the development machine), large enough to keep
# kernel launches few (2**21 split N=12544, batch 2 into per-row chunks: 2.64 vs 1.98 us per token).
CACHE_CHUNK_ELEMENTS = 1 << 22
# qkv elements per chunk of images in the CPU training path of the cluster attention (see _image_chunks).
ATTENTION_CHUNK_ELEMENTS = CACHE_CHUNK_ELEMENTS
NORMALIZE_EPS = 1e-12  # as torch.nn.functional.normalize
# Bound of the plan cache (all devices together). A plan is ~6 MiB at stage 1 of an 800x1216 input: the cache
# keeps the plans of the last few input sizes under multi-scale training instead of one per size ever seen.
PLAN_CACHE_BYTES = 64 << 20
PLAN_CACHE_ENTRIES = 256
# ``BOAT_MM_CLUSTER_BACKWARD=autograd`` makes eager training take autograd's backward of the gathers (scatter-
# adds, every gathered copy kept), the implementation before issue 22: for before/after benchmarks only.
CLUSTER_BACKWARD_ENV = 'BOAT_MM_CLUSTER_BACKWARD'


class ClusterPlan(NamedTuple):
    """Static layout of the clustering for a given token count (depends on N only, never on data).

    Attributes:
        num_tokens: real tokens N.
        num_levels: binary split levels K; ``2**K`` leaf clusters.
        slots_per_cluster: s, slots in every leaf cluster (real tokens + at most one pad slot).
        overlap: keys each cluster borrows from its sibling (0 when K == 0).
        level_valid: per level, a (groups, group_slots) bool mask of real slots (pads sit at group ends).
        level_layout: per level, a (groups, group_slots) long tensor: child slot -> sorted position.
            Sorted order puts the group's real tokens first (by ratio) and its pads last; the layout
            gives child A its share of real tokens then its pads, then child B likewise.
        key_index: (clusters, s + overlap) slot index (into the M leaf slots) of every key of a cluster.
        key_valid: (clusters, s + overlap) bool, False for pad keys.
    """
    num_tokens: int
    num_levels: int
    slots_per_cluster: int
    overlap: int
    level_valid: Tuple[torch.Tensor, ...]
    level_layout: Tuple[torch.Tensor, ...]
    key_index: torch.Tensor
    key_valid: torch.Tensor

    @property
    def num_slots(self) -> int:
        return self.slots_per_cluster * 2 ** self.num_levels

    @property
    def num_clusters(self) -> int:
        return 2 ** self.num_levels

    @property
    def has_padding(self) -> bool:
        return self.num_slots != self.num_tokens


def num_levels_for(num_tokens: int, cluster_size: int) -> int:
    """Levels K so that N / 2**K is the power-of-two fraction of N closest to ``cluster_size``
    (in log scale); 0, i.e. one cluster, when N <= cluster_size. Exact for N = cluster_size * 2**K."""
    if num_tokens <= cluster_size:
        return 0
    return max(0, int(math.floor(math.log2(num_tokens / cluster_size) + 0.5)))


def _split_pads(pads: int) -> Tuple[int, int]:
    """Pads of a group go half to each child (child A takes the odd one)."""
    return (pads + 1) // 2, pads // 2


@cache_outside_tracing(maxsize=PLAN_CACHE_ENTRIES, max_bytes=PLAN_CACHE_BYTES)
def plan_clusters(num_tokens: int, cluster_size: int = DEFAULT_CLUSTER_SIZE,
                  overlap: int = DEFAULT_OVERLAP,
                  device: Optional[torch.device] = None) -> ClusterPlan:
    """Compute (and cache) the static clustering layout for ``num_tokens`` tokens.

    The plan's tensors live on ``device`` (CPU by default), so a forward pass copies nothing."""
    if device is not None and torch.device(device).type != 'cpu':
        return _plan_to(plan_clusters(num_tokens, cluster_size, overlap), torch.device(device))
    levels, slots, eff_overlap = _plan_sizes(num_tokens, cluster_size, overlap)
    total = slots * 2 ** levels
    pads = [total - num_tokens]  # pad count of every group at the current level
    level_valid: List[torch.Tensor] = []
    level_layout: List[torch.Tensor] = []
    for level in range(levels):
        group_slots = total // 2 ** level
        half = group_slots // 2
        valid = torch.ones(len(pads), group_slots, dtype=torch.bool)
        layout = torch.empty(len(pads), group_slots, dtype=torch.long)
        child_pads = []
        for g, p in enumerate(pads):
            valid[g, group_slots - p:] = False
            pad_a, pad_b = _split_pads(p)
            real_a, real_b = half - pad_a, half - pad_b
            reals = torch.arange(group_slots - p)
            pad_pos = torch.arange(group_slots - p, group_slots)
            layout[g] = torch.cat([reals[:real_a], pad_pos[:pad_a], reals[real_a:real_a + real_b],
                                   pad_pos[pad_a:]])
            child_pads += [pad_a, pad_b]
        pads = child_pads
        level_valid.append(valid)
        level_layout.append(layout)

    leaf_pads = torch.tensor(pads)  # 0 or 1 per cluster
    own = torch.arange(total).view(-1, slots)
    own_valid = torch.arange(slots).unsqueeze(0) < (slots - leaf_pads).unsqueeze(1)
    if eff_overlap > 0:
        cluster = torch.arange(2 ** levels)
        sibling = cluster ^ 1
        # Even cluster takes the first keys of its (odd) sibling; odd cluster the last *real* keys of
        # its (even) sibling: the tokens on either side of the split point.
        first = torch.arange(eff_overlap).unsqueeze(0).expand(len(cluster), -1)
        last = (slots - leaf_pads[sibling]).unsqueeze(1) - eff_overlap + torch.arange(eff_overlap)
        offsets = torch.where((cluster % 2 == 0).unsqueeze(1), first, last)
        borrowed = sibling.unsqueeze(1) * slots + offsets
        key_index = torch.cat([own, borrowed], dim=1)
        key_valid = torch.cat([own_valid, torch.ones_like(borrowed, dtype=torch.bool)], dim=1)
    else:
        key_index, key_valid = own, own_valid
    return ClusterPlan(num_tokens, levels, slots, eff_overlap, tuple(level_valid), tuple(level_layout),
                       key_index, key_valid)


def _plan_sizes(num_tokens: int, cluster_size: int, overlap: int) -> Tuple[int, int, int]:
    """A plan's Python numbers: split levels, slots per leaf cluster, keys borrowed from the sibling."""
    if num_tokens < 1:
        raise ValueError(f'FSLA needs at least one token, got N={num_tokens}')
    levels = num_levels_for(num_tokens, cluster_size)
    slots = -(-num_tokens // 2 ** levels)
    return levels, slots, (min(overlap, slots - 1) if levels > 0 else 0)


@constant_under_compile
def _plan_tensors(num_tokens: int, cluster_size: int, overlap: int, device: torch.device) -> tuple:
    """The tensors of ``plan_clusters(...)``, flat (key_index, key_valid, level_valid..., level_layout...):
    what a compiled graph holds as constants."""
    plan = plan_clusters(num_tokens, cluster_size, overlap, device)
    return (plan.key_index, plan.key_valid) + plan.level_valid + plan.level_layout


def cluster_plan(num_tokens: int, cluster_size: int, overlap: int, device: torch.device) -> ClusterPlan:
    """``plan_clusters`` for a forward pass. Eager: the cached plan. Under torch.compile the plan's numbers
    are traced as Python and its tensors are graph constants (``_plan_tensors``), so a compiled call builds
    no plan: traced, the Python loops of ``plan_clusters`` were hundreds of CPU ops run again on every call
    (and on the GPU machine, C++ kernels that inductor failed to compile)."""
    if not is_compiling():
        return plan_clusters(num_tokens, cluster_size, overlap, device)
    levels, slots, eff_overlap = _plan_sizes(num_tokens, cluster_size, overlap)
    tensors = _plan_tensors(num_tokens, cluster_size, overlap, device)
    return ClusterPlan(num_tokens, levels, slots, eff_overlap, tuple(tensors[2:2 + levels]),
                       tuple(tensors[2 + levels:]), tensors[0], tensors[1])


def _plan_to(plan: ClusterPlan, device: torch.device) -> ClusterPlan:
    return plan._replace(level_valid=tuple(t.to(device) for t in plan.level_valid),
                         level_layout=tuple(t.to(device) for t in plan.level_layout),
                         key_index=plan.key_index.to(device), key_valid=plan.key_valid.to(device))


def take_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[r, index[r, j]]`` for x (R, L, d) and index (R, K): one contiguous row copy (index_select),
    much faster than ``gather`` with an index expanded over d."""
    rows, length, dims = x.shape
    offsets = torch.arange(rows, device=x.device).unsqueeze(1) * length
    return x.reshape(rows * length, dims).index_select(0, (index + offsets).reshape(-1)).view(rows, -1, dims)


def _half_means(q: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
    """Initial centroids: mean of the real q in the first and in the second half of every group.

    q: (BH, G, n, d); valid: (G, n) real-slot mask, or None when the plan has no pads.
    Returns (BH, G, d, 2), not yet normalised."""
    bh, groups, n, d = q.shape
    halves = q.view(bh, groups, 2, n // 2, d)
    if valid is None:
        means = halves.mean(dim=3)
    else:
        weights = valid.view(1, groups, 2, n // 2, 1).to(q.dtype)
        means = (halves * weights).sum(dim=3) / weights.sum(dim=3).clamp(min=1)
    return means.transpose(-1, -2)


def stable_argsort(keys: torch.Tensor) -> torch.Tensor:
    """Indices that sort the last dim ascending, ties kept in current order (a stable sort).

    For float32 keys in eager runs, one unstable sort of unique int64 keys (order-preserving float bits,
    then the position) gives exactly the stable order and is faster than a stable float sort on CPU.
    Traced graphs (export, compile, FLOP counters) record the plain stable sort (exporters have no bit
    cast). ONNX exports record a full-length ascending ``topk`` instead: ONNX has no stable sort, but its
    ``TopK`` breaks ties by the lower index, which is the stable order (both ONNX exporters, TorchScript and
    dynamo, translate ``topk`` to ``TopK``; neither translates a stable sort)."""
    n = keys.shape[-1]
    if torch.onnx.is_in_onnx_export():
        return torch.topk(keys, n, dim=-1, largest=False, sorted=True).indices
    if keys.dtype != torch.float32 or is_tracing():
        return torch.sort(keys, dim=-1, stable=True).indices
    bits = (keys + 0.0).contiguous().view(torch.int32)  # + 0.0 turns -0.0 into 0.0: they tie, as in a sort
    bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negative floats: reverse their order, as signed ints
    composite = (bits.to(torch.int64) << 32) | torch.arange(n, device=keys.device)
    return torch.sort(composite, dim=-1).values & 0xFFFFFFFF


def _split_levels(q: torch.Tensor, inv_norm: torch.Tensor, perm: torch.Tensor, plan: ClusterPlan, first: int,
                  last: int, group0: int, num_groups: int, kmeans_iters: int,
                  temperature: float) -> torch.Tensor:
    """Run split levels ``first .. last - 1`` on ``num_groups`` consecutive groups (starting at group
    ``group0`` of level ``first``) whose slots hold raw ``q`` (BH, slots, d), ``inv_norm`` = 1 / |q|
    (BH, slots) and ``perm`` (BH, slots); returns the reordered ``perm``.

    Cosines are computed as (c . q) / |q|, as products c^T q^T: on CPU these wide, short products are
    several times faster than q @ c with one or two columns."""
    bh, span, d = q.shape
    for level in range(first, last):
        scale = 1 << (level - first)
        groups = num_groups * scale
        valid = plan.level_valid[level][group0 * scale:(group0 + num_groups) * scale]
        layout = plan.level_layout[level][group0 * scale:(group0 + num_groups) * scale]
        n = span // groups
        q_g = q.view(bh, groups, n, d)
        q_t = q_g.transpose(-1, -2)
        inv_g = inv_norm.view(bh, groups, 1, n)
        real = valid.view(1, groups, 1, n).to(q.dtype) if plan.has_padding else None
        means = _half_means(q_g, valid if plan.has_padding else None)
        c0, c1 = F.normalize(means[..., 0], dim=-1), F.normalize(means[..., 1], dim=-1)
        for _ in range(kmeans_iters):
            # Soft assignment softmax(T * [s0, s1]) is sigmoid(+-T * (s0 - s1)): one product, no softmax.
            logit = temperature * ((c0 - c1).unsqueeze(-2) @ q_t) * inv_g  # (BH, G, 1, n)
            assign = torch.cat([torch.sigmoid(logit), torch.sigmoid(-logit)], dim=-2)  # (BH, G, 2, n)
            if real is not None:
                assign = assign * real
            sums = assign @ q_g  # (BH, G, 2, d): weighted sums of the raw q
            c0, c1 = F.normalize(sums[..., 0, :], dim=-1), F.normalize(sums[..., 1, :], dim=-1)
        scores = (torch.stack([c0, c1], dim=-2) @ q_t) * inv_g  # (BH, G, 2, n)
        ratio = (scores[..., 0, :] + 1) / (scores[..., 1, :] + 1)
        ratio = torch.nan_to_num(ratio, nan=math.inf)
        if plan.has_padding:
            ratio = ratio.masked_fill(~valid.unsqueeze(0), math.inf)
        order = stable_argsort(ratio)
        if plan.has_padding:
            order = order.gather(-1, layout.unsqueeze(0).expand(bh, -1, -1))
        order = (order + torch.arange(groups, device=q.device).view(1, groups, 1) * n).view(bh, span)
        perm = perm.gather(-1, order)
        if level + 1 < last:
            q, inv_norm = take_rows(q, order), inv_norm.gather(-1, order)
    return perm


@torch.no_grad()
def balanced_hierarchical_clustering(q: torch.Tensor, plan: ClusterPlan,
                                     kmeans_iters: int = DEFAULT_KMEANS_ITERS,
                                     temperature: float = DEFAULT_TEMPERATURE,
                                     use_native: bool = True) -> torch.Tensor:
    """Cluster the queries of every (image, head) row; no gradient flows through the assignment.

    On CPU (float32/float64) this runs the fused kernel of ``native_clustering`` when it can be built
    (``use_native=False`` or ``BOAT_MM_NATIVE=0``: always the torch implementation below); both give
    the same clusters, up to floating-point summation order.

    Args:
        q: (BH, N, d) queries, one row per image and head; or (BH, M, d) already padded to the plan's
            M slots, in which case the pad rows may hold anything, NaN included: they are zeroed before use
            (the torch path weights pads by 0 in its centroid sums, and 0 * NaN would still be NaN).
        plan: ``plan_clusters(N, ...)``.
    Returns:
        perm: (BH, M) long, ``perm[r, slot]`` = token index placed at leaf slot ``slot`` (values >= N
        are pad slots). Slots ``c*s .. (c+1)*s - 1`` form cluster ``c``; siblings are ``2j, 2j+1``.
    """
    rows = q.shape[1]
    total = plan.num_slots
    if rows not in (plan.num_tokens, total):
        raise ValueError(f'clustering plan is for {plan.num_tokens} tokens ({total} slots), got {rows}')
    # Sorting keys are computed in fp32 at least: ties and order must not depend on autocast.
    q = q.detach().float() if q.dtype in (torch.float16, torch.bfloat16) else q.detach()
    if rows < total:
        q = F.pad(q, (0, 0, 0, total - rows))
    elif total > plan.num_tokens:  # pre-padded: whatever the pad rows hold must not reach a centroid
        q = q.masked_fill(torch.arange(total, device=q.device).view(1, total, 1) >= plan.num_tokens, 0.0)
    eager_cpu = q.device.type == 'cpu' and not is_tracing()
    native = use_native and eager_cpu
    # Autocast must not reach the cosines either: under it the products below would run in bf16 / fp16.
    # (Devices without autocast, e.g. meta, refuse even a disabled autocast context.)
    if not autocast_available(q.device.type):
        return _cluster(q, plan, kmeans_iters, temperature, native, eager_cpu)
    with torch.autocast(q.device.type, enabled=False):
        return _cluster(q, plan, kmeans_iters, temperature, native, eager_cpu)


def _cluster(q: torch.Tensor, plan: ClusterPlan, kmeans_iters: int, temperature: float, native: bool,
             eager_cpu: bool) -> torch.Tensor:
    """``balanced_hierarchical_clustering`` on q already padded to the plan's slots, autocast off."""
    bh, total, d = q.shape
    device = q.device
    if native:
        perm = cluster_native(q, plan.num_levels, total - plan.num_tokens, plan.overlap, kmeans_iters,
                              temperature, NORMALIZE_EPS)
        if perm is not None:
            return perm
    # 1 / max(|q|, eps), the factor F.normalize applies: cosines are (c . q) * inv_norm.
    inv_norm = 1.0 / q.norm(dim=-1).clamp(min=NORMALIZE_EPS)
    perm = torch.arange(total, device=device).unsqueeze(0).repeat(bh, 1)
    # The first levels split big groups over the whole tensor; once the data no longer fits in the CPU
    # cache, each group's subtree is finished chunk by chunk (one row, a few groups, contiguous) so
    # that the deeper levels run on data that stays in cache. Only in eager CPU runs: on a GPU (and in
    # traced graphs) every level runs batched over all rows and groups, with no host-side loop.
    split_level = plan.num_levels
    if eager_cpu and bh * total * d > CACHE_CHUNK_ELEMENTS:
        split_level = 0
        while split_level < plan.num_levels and (total >> split_level) * d > CACHE_CHUNK_ELEMENTS:
            split_level += 1
    if split_level == plan.num_levels:
        return _split_levels(q, inv_norm, perm, plan, 0, split_level, 0, 1, kmeans_iters, temperature)
    perm = _split_levels(q, inv_norm, perm, plan, 0, split_level, 0, 1, kmeans_iters, temperature)
    if split_level:  # bring q into the order the first levels produced
        q, inv_norm = take_rows(q, perm), inv_norm.gather(-1, perm)
    group_slots = total >> split_level
    groups_per_chunk = max(1, CACHE_CHUNK_ELEMENTS // (group_slots * d))
    for row in range(bh):
        for g0 in range(0, 1 << split_level, groups_per_chunk):
            count = min(groups_per_chunk, (1 << split_level) - g0)
            span = slice(g0 * group_slots, (g0 + count) * group_slots)
            one = slice(row, row + 1)
            perm[one, span] = _split_levels(q[one, span], inv_norm[one, span], perm[one, span], plan,
                                            split_level, plan.num_levels, g0, count, kmeans_iters, temperature)
    return perm


def _cluster_operands(qkv: torch.Tensor, perm: torch.Tensor, plan: ClusterPlan):
    """Queries, keys and values of every cluster, gathered from the qkv projection.

    qkv: (B, N, 3, h, d); perm: (B*h, M). Returns q (B, h*clusters, s, d), k and v (B, h*clusters, s + overlap,
    d), the key mask (None without pads) and the (B, h, M) token read at every slot (pad slots read token 0:
    any real token would do, they are masked as keys and dropped as queries, so their content can never
    reach a real token)."""
    b, num_tokens, _, heads, d = qkv.shape
    slots, clusters = plan.slots_per_cluster, plan.num_clusters
    perm = perm.view(b, heads, plan.num_slots)
    gather_idx = perm.masked_fill(perm >= num_tokens, 0) if plan.has_padding else perm
    key_count = plan.key_index.shape[1]
    key_idx = gather_idx.index_select(2, plan.key_index.view(-1))
    # Row of (image, token, q/k/v, head) in the flat (B * N * 3 * h, d) view of qkv.
    rows = qkv.reshape(-1, d)
    base = (torch.arange(b, device=qkv.device).view(b, 1, 1) * num_tokens * 3 * heads
            + torch.arange(heads, device=qkv.device).view(1, heads, 1))

    def take(token_idx, which, count):  # -> (B, h * clusters, count, d), 4-D for every SDPA backend
        index = base + token_idx * (3 * heads) + which * heads
        return rows.index_select(0, index.reshape(-1)).view(b, heads * clusters, count, d)

    mask = None
    if plan.has_padding:
        mask = plan.key_valid.view(1, 1, clusters, 1, key_count).expand(1, heads, -1, -1, -1)
        mask = mask.reshape(1, heads * clusters, 1, key_count)
    return take(gather_idx, 0, slots), take(key_idx, 1, key_count), take(key_idx, 2, key_count), mask, gather_idx


def _slot_of_token(perm: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """(B, h, M) permutation -> (B, N, h) leaf slot of every real token (the inverse permutation)."""
    total = perm.shape[-1]
    inverse = torch.empty_like(perm).scatter_(2, perm, torch.arange(total, device=perm.device).expand_as(perm))
    return inverse[..., :num_tokens].transpose(1, 2)


def _rows_by_token(slot_of: torch.Tensor, rows_per_head: int) -> torch.Tensor:
    """Flat row, in a (B * h * rows_per_head, d) tensor of per-head slot rows, of every (image, token, head):
    (B, N, h)."""
    b, _, heads = slot_of.shape
    head_rows = (torch.arange(b, device=slot_of.device).view(b, 1, 1) * heads
                 + torch.arange(heads, device=slot_of.device).view(1, 1, heads)) * rows_per_head
    return head_rows + slot_of


def _slots_to_tokens(out: torch.Tensor, perm: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """(B, h*clusters, s, d) cluster outputs -> (B, N, h * d) in token order: row (image, head, slot) of the
    output for every (image, token, head), straight into (B, N, h, d); pad slots (ids >= N) are never read."""
    b, heads, total = perm.shape
    d = out.shape[-1]
    slot_of = _slot_of_token(perm, num_tokens)
    rows = _rows_by_token(slot_of, total)
    return out.reshape(-1, d).index_select(0, rows.reshape(-1)).view(b, num_tokens, heads * d)


def _attend(qkv: torch.Tensor, perm: torch.Tensor, plan: ClusterPlan, scale: float,
            dropout_p: float) -> torch.Tensor:
    """``attend_within_clusters`` as differentiable torch ops: autograd's backward of the gathers is a
    scatter-add (the path of traced graphs and attention dropout)."""
    q_slots, k_keys, v_keys, mask, _ = _cluster_operands(qkv, perm, plan)
    out = F.scaled_dot_product_attention(q_slots, k_keys, v_keys, attn_mask=mask, dropout_p=dropout_p,
                                         scale=scale)
    return _slots_to_tokens(out, perm.view(qkv.shape[0], qkv.shape[3], plan.num_slots), qkv.shape[1])


def _borrowed_key_positions(plan: ClusterPlan) -> Tuple[torch.Tensor, torch.Tensor]:
    """For every leaf slot, the position among the (clusters * (s + overlap)) cluster keys at which its
    sibling borrows it (M,; 0 where it is not borrowed) and a (M, 1) bool mask of the borrowed slots. Every
    slot is a key of its own cluster once and borrowed by at most one sibling, so the gradient of a slot's
    key is its own cluster's row plus at most one borrowed row: a gather, never a scatter-add."""
    slots, key_count = plan.slots_per_cluster, plan.key_index.shape[1]
    device = plan.key_index.device
    positions = torch.arange(plan.num_clusters * key_count, device=device).view(plan.num_clusters, key_count)
    borrowed_at = torch.zeros(plan.num_slots, dtype=torch.long, device=device)
    is_borrowed = torch.zeros(plan.num_slots, 1, dtype=torch.bool, device=device)
    borrowed_slots = plan.key_index[:, slots:].reshape(-1)
    borrowed_at[borrowed_slots] = positions[:, slots:].reshape(-1)
    is_borrowed[borrowed_slots] = True
    return borrowed_at, is_borrowed


def _additive_mask(mask: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """A boolean key mask as the additive one the CPU flash kernel takes (0 kept, -inf masked), as SDPA
    converts it."""
    return None if mask is None else torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
        ~mask, -math.inf)


def _flash_cpu_available(qkv: torch.Tensor) -> bool:
    """Whether SDPA's CPU flash kernels can be called directly (forward keeps its logsumexp, backward
    takes it: no recomputed forward). Newer than torch 2.1; without them the backward recomputes."""
    return qkv.device.type == 'cpu' and hasattr(torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu')


def _image_chunks(qkv: torch.Tensor) -> List[slice]:
    """Consecutive image ranges of the batch, each with at most ``ATTENTION_CHUNK_ELEMENTS`` qkv elements
    (at least one image), so that the row gathers of a chunk read a source of cache size instead of the
    whole batch (230 MB of qkv at stage 1 of a 64-image ImageNet batch)."""
    images = qkv.shape[0]
    per_chunk = max(1, ATTENTION_CHUNK_ELEMENTS // max(1, qkv[0].numel()))
    return [slice(start, min(start + per_chunk, images)) for start in range(0, images, per_chunk)]


def _cluster_attention_backward(qkv: torch.Tensor, perm: torch.Tensor, plan: ClusterPlan, scale: float,
                                grad_out: torch.Tensor, flash_saved: Tuple[torch.Tensor, ...],
                                borrowed: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The gradient of qkv (B, N, 3, h, d) for the output gradient (B, N, h*d) of some images:
    ``_ClusterAttention``'s backward on one chunk of its batch; ``borrowed``: ``_borrowed_key_positions(plan)``."""
    b, num_tokens, _, heads, d = qkv.shape
    total, clusters, key_count = plan.num_slots, plan.num_clusters, plan.key_index.shape[1]
    q_slots, k_keys, v_keys, mask, gather_idx = _cluster_operands(qkv.detach(), perm, plan)
    perm = perm.view(b, heads, total)
    # (B, N, h*d) tensors in cluster order; pad slots are not outputs, their queries get no gradient.
    token_rows = (torch.arange(b, device=qkv.device).view(b, 1, 1) * num_tokens * heads
                  + torch.arange(heads, device=qkv.device).view(1, heads, 1) + gather_idx * heads).reshape(-1)

    def in_cluster_order(tokens):
        return tokens.reshape(-1, d).index_select(0, token_rows).view_as(q_slots)
    grad_slots = in_cluster_order(grad_out)
    if plan.has_padding:
        grad_slots = grad_slots.masked_fill((perm >= num_tokens).view(grad_slots.shape[:-1] + (1,)), 0.0)
    if flash_saved:
        out, logsumexp = flash_saved
        grad_q, grad_k, grad_v = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_slots, q_slots, k_keys, v_keys, in_cluster_order(out), logsumexp, 0.0, False,
            attn_mask=_additive_mask(mask, qkv.dtype), scale=scale)
    else:
        with torch.enable_grad():
            operands = [t.requires_grad_() for t in (q_slots, k_keys, v_keys)]
            attended = F.scaled_dot_product_attention(*operands, attn_mask=mask, scale=scale)
            grad_q, grad_k, grad_v = torch.autograd.grad(attended, operands, grad_slots)
    # Slot-order gradients of q, k and v in one buffer: k / v of a slot = own cluster's row + borrowed row.
    # (SDPA's gradients may come in any strides: the CPU flash kernel returns them as (B, L, H, d).)
    slots = plan.slots_per_cluster
    per_slot = grad_q.new_empty(3, b, heads, clusters, slots, d)
    per_slot[0].copy_(grad_q.view(b, heads, clusters, slots, d))
    borrowed_at, is_borrowed = borrowed
    borrowed_cluster, borrowed_key = borrowed_at // key_count, borrowed_at % key_count
    for which, grad_keys in ((1, grad_k), (2, grad_v)):
        by_cluster = grad_keys.view(b, heads, clusters, key_count, d)
        borrowed = by_cluster[:, :, borrowed_cluster, borrowed_key].masked_fill_(~is_borrowed, 0.0)
        torch.add(by_cluster[:, :, :, :slots], borrowed.view(b, heads, clusters, slots, d), out=per_slot[which])
    # One gather into the (B, N, 3, h, d) layout of qkv.
    slot_of = _slot_of_token(perm, num_tokens)  # (B, N, h)
    rows = _rows_by_token(slot_of, total)
    rows = rows.unsqueeze(2) + torch.arange(3, device=qkv.device).view(1, 1, 3, 1) * (b * heads * total)
    grad_qkv = per_slot.view(-1, d).index_select(0, rows.reshape(-1)).view(b, num_tokens, 3, heads, d)
    return grad_qkv




class _ClusterAttention(torch.autograd.Function):
    """Attention within clusters whose backward copies nothing back with scatter-adds.

    The forward gathers q / k / v per cluster, runs SDPA and keeps none of the gathered copies: it saves
    qkv (which LePE keeps alive anyway), the permutation and, on CPU, its own output and SDPA's logsumexp
    (elsewhere the backward recomputes the attention instead). The backward gathers the operands again,
    runs SDPA's backward and routes the gradients to token order with gathers alone: the clusters are a
    permutation, so a token's query gradient is one row, its key / value gradient the row of its own
    cluster plus at most one borrowed row (``_borrowed_key_positions``). No index_add / scatter_add: the
    backward is deterministic on every device and reads memory in cluster order, as the forward does."""

    @staticmethod
    def forward(ctx, qkv, perm, plan, scale):
        ctx.plan, ctx.scale = plan, scale
        if not _flash_cpu_available(qkv):
            ctx.save_for_backward(qkv, perm)
            return _attend(qkv, perm, plan, scale, 0.0)
        heads = qkv.shape[3]
        outs, logsumexps = [], []
        for images in _image_chunks(qkv):
            chunk, chunk_perm = qkv[images], perm[images.start * heads:images.stop * heads]
            q_slots, k_keys, v_keys, mask, _ = _cluster_operands(chunk, chunk_perm, plan)
            out_slots, logsumexp = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q_slots, k_keys, v_keys, 0.0, False, attn_mask=_additive_mask(mask, qkv.dtype), scale=scale)
            outs.append(_slots_to_tokens(out_slots, chunk_perm.view(chunk.shape[0], heads, plan.num_slots),
                                         qkv.shape[1]))
            logsumexps.append(logsumexp)
        out = torch.cat(outs) if len(outs) > 1 else outs[0]
        ctx.save_for_backward(qkv, perm, out, *logsumexps)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        qkv, perm, *flash_saved = ctx.saved_tensors
        heads = qkv.shape[3]
        borrowed = _borrowed_key_positions(ctx.plan)
        if not flash_saved:
            return (_cluster_attention_backward(qkv, perm, ctx.plan, ctx.scale, grad_out, (), borrowed),
                    None, None, None)
        out, *logsumexps = flash_saved
        grad_qkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
        for images, logsumexp in zip(_image_chunks(qkv), logsumexps):
            grad_qkv[images] = _cluster_attention_backward(
                qkv[images], perm[images.start * heads:images.stop * heads], ctx.plan, ctx.scale,
                grad_out[images], (out[images], logsumexp), borrowed)
        return grad_qkv, None, None, None


def attend_within_clusters(qkv: torch.Tensor, perm: torch.Tensor, plan: ClusterPlan, scale: float,
                           dropout_p: float = 0.0) -> torch.Tensor:
    """Attention of every query over its cluster's keys (own cluster + sibling overlap).

    qkv: (B, N, 3, h, d), the qkv projection as it comes out of the Linear (each d-vector contiguous,
    so rows are gathered straight from it, with no transposed copies); perm: (B*h, M) from
    ``balanced_hierarchical_clustering``. Returns (B, N, h * d) in the original token order.

    When qkv needs a gradient in an eager run, the backward is ``_ClusterAttention``'s: no gathered copy is
    kept for it and no scatter-add undoes the gathers. Traced graphs (torch.compile, torch.export, ONNX)
    and attention dropout take the same computation as plain torch ops, whose backward autograd derives."""
    gather_free = os.environ.get(CLUSTER_BACKWARD_ENV, 'gather') != 'autograd'
    if gather_free and qkv.requires_grad and torch.is_grad_enabled() and not is_tracing() and dropout_p == 0.0:
        return _ClusterAttention.apply(qkv, perm, plan, scale)
    return _attend(qkv, perm, plan, scale, dropout_p)


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
        if cluster_size < 2:
            raise ValueError(f'cluster_size must be >= 2, got {cluster_size}')
        if overlap < 0:
            raise ValueError(f'overlap must be >= 0, got {overlap}')
        if kmeans_iters < 0:
            raise ValueError(f'kmeans_iters must be >= 0, got {kmeans_iters}')
        if temperature <= 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
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
        q = qkv[:, :, 0].transpose(1, 2).reshape(b * self.num_heads, num_tokens, self.head_dims)
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
