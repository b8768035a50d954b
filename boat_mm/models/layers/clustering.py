"""Balanced hierarchical binary clustering of FSLA's queries: the static plan and the torch implementation.

Clustering runs per (image, head) row on that head's queries (BOAT_SPEC.md section 2). The released models only
ever saw ``N = cluster_size * 2**K`` tokens; for any other ``N`` the token set is padded to ``2**K * s`` slots
(``s = ceil(N / 2**K)``) with *pad slots* that are excluded from every centroid, always sort last and are never
attended to, so that no pad value can reach a real token's output. Pad slots are spread evenly over the tree
(at most one per leaf cluster), which keeps every cluster within ``[cluster_size / 2, 2 * cluster_size]`` real
tokens. Because the number of pad slots in every group is fixed by ``N`` alone, the plan (``plan_clusters``)
is static and cached.

Three implementations give the same clusters (``kernel_choice`` picks one, ``BOAT_MM_NATIVE`` switches): in
eager CPU runs a fused C++ kernel (``native_clustering``), in CUDA runs, eager or compiled, fused Triton kernels
(three launches per split level, as the custom op ``fsla_ops.cluster``), elsewhere (torch.export / ONNX tracing,
torch.compile on CPU, no compiler, no triton, ``BOAT_MM_NATIVE=0``, and the fused ops' fallback) the torch code
below, which batches every level over all groups, with shapes fixed by N alone and no host-device
synchronisation.
"""
import math
import os
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

from ...utils.torch_features import autocast_available, constant_under_compile, is_compiling, is_exporting
from . import fsla_ops, triton_kernels
from .native_clustering import NATIVE_ENV, cluster_native
from .transformer_layers import cache_outside_tracing, is_tracing

__all__ = ['ClusterPlan', 'plan_clusters', 'cluster_plan', 'balanced_hierarchical_clustering', 'cluster_with_torch_ops',
           'stable_argsort', 'take_rows', 'num_levels_for', 'kernel_choice', 'NATIVE', 'TRITON', 'TORCH']

# Released hyper-parameters (BOAT-Swin and BOAT-CSWin alike).
DEFAULT_CLUSTER_SIZE = 49
DEFAULT_OVERLAP = 20
DEFAULT_KMEANS_ITERS = 2
DEFAULT_TEMPERATURE = 100.0
# Query floats (16 MiB) above which clustering is finished in chunks of this size: small enough to stay
# in a CPU's last-level cache (half of the 32 MiB L3 of the development machine), large enough to keep
# kernel launches few (2**21 split N=12544, batch 2 into per-row chunks: 2.64 vs 1.98 us per token).
CACHE_CHUNK_ELEMENTS = 1 << 22
NORMALIZE_EPS = 1e-12  # as torch.nn.functional.normalize
# Bound of the plan cache (all devices together). A plan is ~6 MiB at stage 1 of an 800x1216 input: the cache
# keeps the plans of the last few input sizes under multi-scale training instead of one per size ever seen.
PLAN_CACHE_BYTES = 64 << 20
PLAN_CACHE_ENTRIES = 256
# Implementations (``kernel_choice``): the C++ kernel, the Triton kernels, plain torch ops.
NATIVE, TRITON, TORCH = 'native', 'triton', 'torch'


def _records_torch_ops() -> bool:
    """Whether this run records a graph that must hold torch ops alone: torch.export (and the ONNX exporter
    built on it), TorchScript tracing (the older ONNX exporter, FLOP counters), or torch.compile without the
    custom ops (torch < 2.6). torch.compile with them keeps the fused ops (``fsla_ops``)."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    if not is_compiling():
        return False
    return not fsla_ops.CUSTOM_OPS or is_exporting()


def kernel_choice(device: torch.device, dtype: Optional[torch.dtype] = None, head_dims: int = 0,
                  slots: int = 0) -> str:
    """Which implementation runs FSLA's clustering and cluster attention for tensors on ``device`` (of
    ``dtype`` with ``head_dims``-wide heads and, for the attention, clusters of ``slots`` query slots, where the
    caller knows them: the fused kernels run only where the resource report shows them fitting,
    ``triton_kernels.fused_ready``).

    ``BOAT_MM_NATIVE`` (default on) is the one switch: on, eager CPU runs take the C++ clustering kernel and
    CUDA runs the Triton kernels (where triton imports), torch.compile included (as custom ops); ``0`` /
    ``off`` takes the torch ops everywhere; ``triton`` takes the Triton kernels wherever they can run, CPU
    tensors included when the process started with ``TRITON_INTERPRET=1`` (the tests and the GPU check's CPU
    rehearsal). torch.export, ONNX and TorchScript traces always record the torch ops: exporters know no custom
    kernel; so does torch.compile of the CPU path (inductor fuses those ops itself)."""
    setting = os.environ.get(NATIVE_ENV, '1').strip().lower()
    if setting in ('0', 'false', 'no', 'off') or _records_torch_ops():
        return TORCH
    kind = torch.device(device).type
    fused = triton_kernels.triton_available(device) and (
        dtype is None or triton_kernels.fused_ready(device, dtype, head_dims, slots))
    if setting == TRITON and fused:
        return TRITON
    if kind == 'cpu':
        return TORCH if is_compiling() else NATIVE
    return TRITON if kind == 'cuda' and fused else TORCH


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
        cluster_size, requested_overlap: the arguments the plan was made for (``plan_clusters``), so that
            the plan can be made again from them (the fused ops' fallback to the torch ops does).
    """
    num_tokens: int
    num_levels: int
    slots_per_cluster: int
    overlap: int
    level_valid: Tuple[torch.Tensor, ...]
    level_layout: Tuple[torch.Tensor, ...]
    key_index: torch.Tensor
    key_valid: torch.Tensor
    cluster_size: int = DEFAULT_CLUSTER_SIZE
    requested_overlap: int = DEFAULT_OVERLAP

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


@fsla_ops.torch_implementation('plan')
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
                       key_index, key_valid, cluster_size, overlap)


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
                       tuple(tensors[2 + levels:]), tensors[0], tensors[1], cluster_size, overlap)


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

    Eager runs take the fused kernels of their device (``kernel_choice``: ``native_clustering`` on CPU when
    it can be built, ``triton_kernels`` on CUDA); ``use_native=False`` or ``BOAT_MM_NATIVE=0``: always the torch
    implementation below. All give the same clusters, up to floating-point summation order.

    Args:
        q: (BH, N, d) queries, one row per image and head, or (B, H, N, d) (any strides: the Triton kernels
            read it in place, e.g. as a view of the qkv projection); or (BH, M, d) already padded to the plan's
            M slots, in which case the pad rows may hold anything, NaN included: they are zeroed before use
            (the torch path weights pads by 0 in its centroid sums, and 0 * NaN would still be NaN).
        plan: ``plan_clusters(N, ...)``.
    Returns:
        perm: (BH, M) long, ``perm[r, slot]`` = token index placed at leaf slot ``slot`` (values >= N
        are pad slots). Slots ``c*s .. (c+1)*s - 1`` form cluster ``c``; siblings are ``2j, 2j+1``.
    """
    rows = q.shape[-2]
    total = plan.num_slots
    if rows not in (plan.num_tokens, total):
        raise ValueError(f'clustering plan is for {plan.num_tokens} tokens ({total} slots), got {rows}')
    if use_native and kernel_choice(q.device, q.dtype, q.shape[-1]) == TRITON:  # q in place, rows >= N ignored
        return fsla_ops.cluster(q.detach() if q.dim() == 4 else q.detach().unsqueeze(1), plan, kmeans_iters,
                                temperature, NORMALIZE_EPS)
    if q.dim() == 4:
        q = q.reshape(-1, rows, q.shape[-1])
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


@fsla_ops.torch_implementation('cluster')
def cluster_with_torch_ops(q: torch.Tensor, plan: ClusterPlan, kmeans_iters: int, temperature: float) -> torch.Tensor:
    """The torch implementation of the clustering, on any device (the fused ops' fallback)."""
    return balanced_hierarchical_clustering(q, plan, kmeans_iters, temperature, use_native=False)


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
