"""FSLA in a few fused Triton kernels: the clustering and the cluster attention of a GPU forward and backward.

Why: the torch implementation (``clustering`` and ``cluster_attention``) issues ~415 device kernels per FSLA
forward at N=3136, about 70 per split level (half means, cosines, soft assignments, normalisations, gathers of
q): on a GPU that is launch overhead and tiny memory-bound kernels, and BOAT trained at 1.4-3.0x its twin's
time for 1.2x of the FLOPs (docs/gpu_check_h200_2026-12-04.md). Here one split level is three launches, and
the attention one forward and two backward kernels, all reading q, k, v in place in the qkv projection
through the permutation (no gathered copies):

* ``_split_keys``: per group of every (image, head) row, the half means, the soft 2-means iterations, the
  distance ratio and its sort key, in one program (the group's reduction is sequential in that program:
  deterministic, no floating-point atomics). float32 keys are one int64 (order-preserving ratio bits, then the
  slot), so one unstable ``torch.sort`` per level gives the stable order; float64 ratios take a stable sort.
* ``_apply_order``: the children's layout (pads to the group ends) and the new permutation.
* ``_attention_forward``: one program per cluster: q of its slots, k / v of its own and borrowed keys, the
  softmax in fp32 (or fp64), each output row written at its token's position (the clusters are a
  permutation: no scatter) and the row's logsumexp kept for the backward.
* ``_attention_backward`` recomputes the probabilities from the logsumexp and writes the gradients of q and of
  the own keys at their tokens, those of the borrowed keys apart; ``_add_borrowed`` adds them in a second
  launch (a token is borrowed by at most one sibling): no atomics, deterministic on every device.

Arithmetic: fp32 whatever the input dtype (fp16 / bf16 operands of the attention products are multiplied in
their dtype and accumulated in fp32, as in FlashAttention); float64 inputs compute in float64, which is how
the tests prove these kernels equal the torch path.

The kernels are plain functions compiled on first use (``_kernels``), so importing this module needs neither
a GPU nor triton. In a process started with ``TRITON_INTERPRET=1`` they run on CPU tensors in Triton's
interpreter (the tests, the GPU check's CPU rehearsal), elsewhere on CUDA tensors.
"""
import functools
import os
from typing import Optional, Tuple

import torch

try:  # triton comes with CUDA builds of torch; a CPU-only build (or torch 2.1 on some platforms) may lack it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installed torch
    triton = tl = None
# The annotation that marks a kernel argument as compile-time (a class: Triton's interpreter does not read a
# string annotation as one).
constexpr = tl.constexpr if tl is not None else 'constexpr'

__all__ = ['triton_available', 'interpreting', 'cluster_triton', 'attend_triton', 'attention_forward',
           'attention_backward', 'LaunchCounter', 'LAUNCH_COUNTER']

# The kernels use triton 3's ``tl.dot(input_precision=..., out_dtype=...)``: the GPU image has 3.6, the pinned
# torch 3.8; torch 2.1 brings triton 2.1, whose runs take the torch path.
MIN_TRITON = (3, 0)
# Triton's interpreter (CPU tensors: the tests, the GPU check's rehearsal) before 3.8 turns a loop bound that is
# a kernel argument into a 1-element numpy array and fails on int() of it with numpy >= 2 (measured: 3.6.0 with
# numpy 2.4); the compiled kernels on a GPU are not concerned.
MIN_INTERPRETER_TRITON = (3, 8)
TRITON_VERSION = tuple(int(p) for p in triton.__version__.split('.')[:2]) if triton is not None else (0, 0)
# Tokens a program handles at once. On a GPU: a 128 x head_dim tile of q per step. In the interpreter every
# block operation is a numpy call, so bigger blocks mean fewer Python steps.
GPU_TOKEN_BLOCK = 128
INTERPRETER_TOKEN_BLOCK = 1024
# tl.dot needs every dimension of its operands to be at least 16.
MIN_DOT_DIM = 16


class LaunchCounter:
    """Counts the Triton launches of this module (the kernel census adds them to the aten kernels). With
    ``dry`` set, launches are counted and skipped: the census of shapes that the interpreter would take
    minutes for (the count does not depend on the data: no launch is conditional on values). ``inside`` is
    True during a launch: the interpreter's own host copies of the arguments are no device kernels."""

    def __init__(self):
        self.count = 0
        self.active = False
        self.dry = False
        self.inside = False

    def launch(self, kernel, grid, *args, **meta):
        if self.active:
            self.count += 1
        if not self.dry:
            self.inside = True
            try:
                kernel[grid](*args, **meta)
            finally:
                self.inside = False


LAUNCH_COUNTER = LaunchCounter()


def interpreting() -> bool:
    """Whether triton runs kernels in its interpreter (``TRITON_INTERPRET=1`` when triton was imported)."""
    if triton is None:
        return False
    knobs = getattr(triton, 'knobs', None)  # triton >= 3.4; before, the variable itself
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get('TRITON_INTERPRET', '0') == '1'


def triton_available(device: torch.device) -> bool:
    """Whether the fused kernels can run for tensors on ``device``: CUDA with triton, or CPU tensors in
    triton's interpreter."""
    if triton is None or TRITON_VERSION < MIN_TRITON:
        return False
    kind = torch.device(device).type
    if interpreting():
        return kind == 'cpu' and TRITON_VERSION >= MIN_INTERPRETER_TRITON
    return kind == 'cuda'


def _next_pow2(value: int, at_least: int = 1) -> int:
    return max(at_least, 1 << max(0, int(value) - 1).bit_length())


def _split_keys(q_ptr, perm_ptr, key_ptr, stride_image, stride_head, stride_token, perm_row_stride, heads,
                num_tokens, num_slots, group_slots, groups, temperature, eps, HEAD_DIMS: constexpr,
                BLOCK_D: constexpr, BLOCK_N: constexpr, ITERS: constexpr, ACC: constexpr,
                COMPOSITE_KEY: constexpr):
    """One program per (row, group): the sort key of every slot of the group (see the module docstring)."""
    pid = tl.program_id(0).to(tl.int64)
    row = pid // groups
    group = pid % groups
    q_row = q_ptr + (row // heads) * stride_image + (row % heads) * stride_head
    perm_slots = perm_ptr + row * perm_row_stride + group * group_slots
    key_slots = key_ptr + row * num_slots + group * group_slots
    half = group_slots // 2
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < HEAD_DIMS
    # Initial centroids: the means of the real q of each half of the group.
    sum_a = tl.zeros([BLOCK_D], dtype=ACC)
    sum_b = tl.zeros([BLOCK_D], dtype=ACC)
    count_a = tl.zeros([BLOCK_N], dtype=ACC)
    count_b = tl.zeros([BLOCK_N], dtype=ACC)
    for start in range(0, group_slots, BLOCK_N):
        slot = start + tl.arange(0, BLOCK_N)
        token = tl.load(perm_slots + slot, mask=slot < group_slots, other=num_tokens)
        real = (slot < group_slots) & (token < num_tokens)
        x = tl.load(q_row + token[:, None] * stride_token + dims[None, :], mask=real[:, None] & dim_ok[None, :],
                    other=0.0).to(ACC)
        first = real & (slot < half)
        second = real & (slot >= half)
        sum_a += tl.sum(tl.where(first[:, None], x, 0.0), axis=0)
        sum_b += tl.sum(tl.where(second[:, None], x, 0.0), axis=0)
        count_a += first.to(ACC)
        count_b += second.to(ACC)
    mean_a = sum_a / tl.maximum(tl.sum(count_a, axis=0), 1.0)
    mean_b = sum_b / tl.maximum(tl.sum(count_b, axis=0), 1.0)
    centroid_a = mean_a / tl.maximum(tl.sqrt(tl.sum(mean_a * mean_a, axis=0)), eps)
    centroid_b = mean_b / tl.maximum(tl.sqrt(tl.sum(mean_b * mean_b, axis=0)), eps)
    # Soft 2-means: softmax(T * [s_a, s_b]) = sigmoid(+-T * (s_a - s_b)); centroids are weighted sums of raw q.
    for _ in range(ITERS):
        direction = centroid_a - centroid_b
        sum_a = tl.zeros([BLOCK_D], dtype=ACC)
        sum_b = tl.zeros([BLOCK_D], dtype=ACC)
        for start in range(0, group_slots, BLOCK_N):
            slot = start + tl.arange(0, BLOCK_N)
            token = tl.load(perm_slots + slot, mask=slot < group_slots, other=num_tokens)
            real = (slot < group_slots) & (token < num_tokens)
            x = tl.load(q_row + token[:, None] * stride_token + dims[None, :],
                        mask=real[:, None] & dim_ok[None, :], other=0.0).to(ACC)
            inv_norm = 1.0 / tl.maximum(tl.sqrt(tl.sum(x * x, axis=1)), eps)
            logit = temperature * tl.sum(x * direction[None, :], axis=1) * inv_norm
            # sigmoid(+-logit) from exp(-|logit|), which cannot overflow
            small = tl.exp(-tl.abs(logit))
            weight_a = tl.where(logit >= 0, 1.0, small) / (1.0 + small)
            weight_b = tl.where(logit >= 0, small, 1.0) / (1.0 + small)
            weight_a = tl.where(real, weight_a, 0.0)
            weight_b = tl.where(real, weight_b, 0.0)
            sum_a += tl.sum(weight_a[:, None] * x, axis=0)
            sum_b += tl.sum(weight_b[:, None] * x, axis=0)
        centroid_a = sum_a / tl.maximum(tl.sqrt(tl.sum(sum_a * sum_a, axis=0)), eps)
        centroid_b = sum_b / tl.maximum(tl.sqrt(tl.sum(sum_b * sum_b, axis=0)), eps)
    # Distance ratio (s_a + 1) / (s_b + 1): NaN and pads sort last (+inf); -0.0 ties with 0.0, as in a sort.
    for start in range(0, group_slots, BLOCK_N):
        slot = start + tl.arange(0, BLOCK_N)
        in_group = slot < group_slots
        token = tl.load(perm_slots + slot, mask=in_group, other=num_tokens)
        real = in_group & (token < num_tokens)
        x = tl.load(q_row + token[:, None] * stride_token + dims[None, :], mask=real[:, None] & dim_ok[None, :],
                    other=0.0).to(ACC)
        inv_norm = 1.0 / tl.maximum(tl.sqrt(tl.sum(x * x, axis=1)), eps)
        score_a = tl.sum(x * centroid_a[None, :], axis=1) * inv_norm
        score_b = tl.sum(x * centroid_b[None, :], axis=1) * inv_norm
        ratio = (score_a + 1.0) / (score_b + 1.0)
        ratio = tl.where((ratio != ratio) | (~real), float('inf'), ratio)
        ratio = tl.where(ratio == 0.0, 0.0, ratio)
        if COMPOSITE_KEY:
            bits = ratio.to(tl.float32).to(tl.int32, bitcast=True)
            bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negative floats reversed: ordered as signed ints
            key = (bits.to(tl.int64) << 32) | slot.to(tl.int64)
            tl.store(key_slots + slot, key, mask=in_group)
        else:
            tl.store(key_slots + slot, ratio, mask=in_group)


def _apply_order(perm_ptr, order_ptr, layout_ptr, new_perm_ptr, perm_row_stride, num_slots, group_slots, groups,
                 HAS_LAYOUT: constexpr, COMPOSITE_KEY: constexpr, BLOCK_N: constexpr):
    """new_perm[slot] = perm[sorted[layout[slot]]] within every group (layout: child A's real tokens, its pads,
    child B's real tokens, its pads; the identity without pads)."""
    pid = tl.program_id(0).to(tl.int64)
    row = pid // groups
    group = pid % groups
    slot = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    in_group = slot < group_slots
    if HAS_LAYOUT:
        position = tl.load(layout_ptr + group * group_slots + slot, mask=in_group, other=0)
    else:
        position = slot
    source = tl.load(order_ptr + row * num_slots + group * group_slots + position, mask=in_group, other=0)
    if COMPOSITE_KEY:
        source = source & 0xFFFFFFFF
    token = tl.load(perm_ptr + row * perm_row_stride + group * group_slots + source, mask=in_group, other=0)
    tl.store(new_perm_ptr + row * num_slots + group * group_slots + slot, token, mask=in_group)


def _attention_forward(qkv_ptr, perm_ptr, key_index_ptr, out_ptr, lse_ptr, stride_image, stride_token,
                       stride_which, stride_head, out_stride_image, out_stride_token, heads, num_tokens, num_slots,
                       slots, key_count, clusters, scale, HEAD_DIMS: constexpr, BLOCK_D: constexpr,
                       BLOCK_Q: constexpr, BLOCK_K: constexpr, ACC: constexpr,
                       PRECISION: constexpr):
    """One program per (row, cluster): softmax(q k^T * scale) v over the cluster's keys."""
    pid = tl.program_id(0).to(tl.int64)
    row = pid // clusters
    cluster = pid % clusters
    image = row // heads
    head = row % heads
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < HEAD_DIMS
    query = tl.arange(0, BLOCK_Q)
    q_token = tl.load(perm_ptr + row * num_slots + cluster * slots + query, mask=query < slots, other=num_tokens)
    q_real = (query < slots) & (q_token < num_tokens)
    key = tl.arange(0, BLOCK_K)
    key_slot = tl.load(key_index_ptr + cluster * key_count + key, mask=key < key_count, other=0)
    k_token = tl.load(perm_ptr + row * num_slots + key_slot, mask=key < key_count, other=num_tokens)
    k_real = (key < key_count) & (k_token < num_tokens)
    base = qkv_ptr + image * stride_image + head * stride_head + dims[None, :]
    q = tl.load(base + q_token[:, None] * stride_token, mask=q_real[:, None] & dim_ok[None, :], other=0.0)
    k = tl.load(base + stride_which + k_token[:, None] * stride_token, mask=k_real[:, None] & dim_ok[None, :],
                other=0.0)
    v = tl.load(base + 2 * stride_which + k_token[:, None] * stride_token,
                mask=k_real[:, None] & dim_ok[None, :], other=0.0)
    logits = tl.dot(q, tl.trans(k), input_precision=PRECISION, out_dtype=ACC) * scale
    logits = tl.where(k_real[None, :], logits, float('-inf'))
    row_max = tl.max(logits, axis=1)
    weights = tl.exp(logits - row_max[:, None])
    total = tl.sum(weights, axis=1)
    out = tl.dot(weights.to(v.dtype), v, input_precision=PRECISION, out_dtype=ACC) / total[:, None]
    tl.store(out_ptr + image * out_stride_image + q_token[:, None] * out_stride_token + head * HEAD_DIMS
             + dims[None, :], out.to(out_ptr.dtype.element_ty), mask=q_real[:, None] & dim_ok[None, :])
    tl.store(lse_ptr + row * num_slots + cluster * slots + query, row_max + tl.log(total), mask=query < slots)


def _attention_backward(qkv_ptr, perm_ptr, key_index_ptr, grad_out_ptr, lse_ptr, grad_qkv_ptr, borrowed_ptr,
                        stride_image, stride_token, stride_which, stride_head, out_stride_image, out_stride_token,
                        heads, num_tokens, num_slots, slots, key_count, clusters, overlap, scale,
                        HEAD_DIMS: constexpr, BLOCK_D: constexpr, BLOCK_Q: constexpr,
                        BLOCK_K: constexpr, ACC: constexpr, PRECISION: constexpr):
    """One program per (row, cluster): gradients of its queries and keys (grad_qkv has qkv's strides; the
    borrowed keys' gradients go to ``borrowed`` (rows, clusters, overlap, 2, d))."""
    pid = tl.program_id(0).to(tl.int64)
    row = pid // clusters
    cluster = pid % clusters
    image = row // heads
    head = row % heads
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < HEAD_DIMS
    query = tl.arange(0, BLOCK_Q)
    q_token = tl.load(perm_ptr + row * num_slots + cluster * slots + query, mask=query < slots, other=num_tokens)
    q_real = (query < slots) & (q_token < num_tokens)
    key = tl.arange(0, BLOCK_K)
    key_slot = tl.load(key_index_ptr + cluster * key_count + key, mask=key < key_count, other=0)
    k_token = tl.load(perm_ptr + row * num_slots + key_slot, mask=key < key_count, other=num_tokens)
    k_real = (key < key_count) & (k_token < num_tokens)
    q_mask = q_real[:, None] & dim_ok[None, :]
    k_mask = k_real[:, None] & dim_ok[None, :]
    offset = image * stride_image + head * stride_head + dims[None, :]
    q = tl.load(qkv_ptr + offset + q_token[:, None] * stride_token, mask=q_mask, other=0.0)
    k = tl.load(qkv_ptr + offset + stride_which + k_token[:, None] * stride_token, mask=k_mask, other=0.0)
    v = tl.load(qkv_ptr + offset + 2 * stride_which + k_token[:, None] * stride_token, mask=k_mask, other=0.0)
    grad_out = tl.load(grad_out_ptr + image * out_stride_image + q_token[:, None] * out_stride_token
                       + head * HEAD_DIMS + dims[None, :], mask=q_mask, other=0.0)
    lse = tl.load(lse_ptr + row * num_slots + cluster * slots + query, mask=query < slots, other=0.0)
    logits = tl.dot(q, tl.trans(k), input_precision=PRECISION, out_dtype=ACC) * scale
    weights = tl.where(q_real[:, None] & k_real[None, :], tl.exp(logits - lse[:, None]), 0.0)
    out = tl.dot(weights.to(v.dtype), v, input_precision=PRECISION, out_dtype=ACC)
    delta = tl.sum(grad_out.to(ACC) * out, axis=1)
    grad_v = tl.dot(tl.trans(weights).to(grad_out.dtype), grad_out, input_precision=PRECISION, out_dtype=ACC)
    grad_weights = tl.dot(grad_out, tl.trans(v), input_precision=PRECISION, out_dtype=ACC)
    grad_logits = weights * (grad_weights - delta[:, None]) * scale
    grad_q = tl.dot(grad_logits.to(k.dtype), k, input_precision=PRECISION, out_dtype=ACC)
    grad_k = tl.dot(tl.trans(grad_logits).to(q.dtype), q, input_precision=PRECISION, out_dtype=ACC)
    out_ty = grad_qkv_ptr.dtype.element_ty
    tl.store(grad_qkv_ptr + offset + q_token[:, None] * stride_token, grad_q.to(out_ty), mask=q_mask)
    own = k_mask & (key < slots)[:, None]
    tl.store(grad_qkv_ptr + offset + stride_which + k_token[:, None] * stride_token, grad_k.to(out_ty), mask=own)
    tl.store(grad_qkv_ptr + offset + 2 * stride_which + k_token[:, None] * stride_token, grad_v.to(out_ty),
             mask=own)
    lent = k_mask & (key >= slots)[:, None]
    borrowed = borrowed_ptr + ((pid * overlap + (key - slots))[:, None] * 2) * HEAD_DIMS + dims[None, :]
    tl.store(borrowed, grad_k, mask=lent)
    tl.store(borrowed + HEAD_DIMS, grad_v, mask=lent)


def _add_borrowed(perm_ptr, key_index_ptr, borrowed_ptr, grad_qkv_ptr, stride_image, stride_token, stride_which,
                  stride_head, heads, num_tokens, num_slots, slots, key_count, clusters, overlap,
                  HEAD_DIMS: constexpr, BLOCK_D: constexpr, BLOCK_O: constexpr, ACC: constexpr):
    """Adds every borrowed key's gradient to its token's k / v gradient (each token is borrowed at most once)."""
    pid = tl.program_id(0).to(tl.int64)
    row = pid // clusters
    cluster = pid % clusters
    dims = tl.arange(0, BLOCK_D)
    lent = tl.arange(0, BLOCK_O)
    key_slot = tl.load(key_index_ptr + cluster * key_count + slots + lent, mask=lent < overlap, other=0)
    token = tl.load(perm_ptr + row * num_slots + key_slot, mask=lent < overlap, other=num_tokens)
    mask = ((lent < overlap) & (token < num_tokens))[:, None] & (dims < HEAD_DIMS)[None, :]
    target = (grad_qkv_ptr + (row // heads) * stride_image + (row % heads) * stride_head + dims[None, :]
              + token[:, None] * stride_token + stride_which)
    source = borrowed_ptr + ((pid * overlap + lent)[:, None] * 2) * HEAD_DIMS + dims[None, :]
    out_ty = grad_qkv_ptr.dtype.element_ty
    grad_k = tl.load(target, mask=mask, other=0.0).to(ACC) + tl.load(source, mask=mask, other=0.0)
    tl.store(target, grad_k.to(out_ty), mask=mask)
    grad_v = tl.load(target + stride_which, mask=mask, other=0.0).to(ACC) + tl.load(source + HEAD_DIMS, mask=mask,
                                                                                     other=0.0)
    tl.store(target + stride_which, grad_v.to(out_ty), mask=mask)


_KERNEL_BODIES = (_split_keys, _apply_order, _attention_forward, _attention_backward, _add_borrowed)


@functools.lru_cache(maxsize=None)
def _kernels() -> dict:
    """The kernels, compiled on first use: ``triton.jit`` gives Triton's interpreter instead when the process
    started with ``TRITON_INTERPRET=1`` (read by triton at its import, also for its own library functions)."""
    return {body.__name__: triton.jit(body) for body in _KERNEL_BODIES}


def _token_block(tensor: torch.Tensor, group_slots: int) -> int:
    cap = INTERPRETER_TOKEN_BLOCK if tensor.device.type == 'cpu' else GPU_TOKEN_BLOCK
    return min(cap, _next_pow2(group_slots))


def _acc_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _dot_precision(tensor: torch.Tensor) -> str:
    """fp32 products in IEEE fp32 unless the user allowed TF32 for matmuls (``torch.backends.cuda.matmul``)."""
    if tensor.dtype == torch.float32 and tensor.device.type == 'cuda' and torch.backends.cuda.matmul.allow_tf32:
        return 'tf32'
    return 'ieee'


def cluster_triton(q: torch.Tensor, num_tokens: int, num_levels: int, num_slots: int,
                   level_layout: Tuple[Optional[torch.Tensor], ...], kmeans_iters: int, temperature: float,
                   eps: float) -> torch.Tensor:
    """Balanced hierarchical clustering of q (B, H, R, d) (any strides, unit stride along d; R >= N rows, rows
    from N on are ignored) with three launches per split level. Returns perm (B*H, num_slots) as the torch
    path does. ``level_layout[level]`` is the plan's child layout of that level, None where it has no pads."""
    if q.stride(-1) != 1:
        q = q.contiguous()
    images, heads, _, head_dims = q.shape
    rows = images * heads
    kernels = _kernels()
    composite = q.dtype != torch.float64
    acc = _acc_dtype(q.dtype)
    block_d = _next_pow2(head_dims)
    perm = torch.arange(num_slots, device=q.device)
    perm_row_stride = 0  # level 0 reads the identity, shared by every row
    for level in range(num_levels):
        groups = 1 << level
        group_slots = num_slots >> level
        block_n = _token_block(q, group_slots)
        keys = torch.empty(rows, num_slots, device=q.device, dtype=torch.int64 if composite else torch.float64)
        LAUNCH_COUNTER.launch(
            kernels['_split_keys'], (rows * groups,), q, perm, keys, q.stride(0), q.stride(1), q.stride(2),
            perm_row_stride, heads, num_tokens, num_slots, group_slots, groups, float(temperature), float(eps),
            HEAD_DIMS=head_dims, BLOCK_D=block_d, BLOCK_N=block_n, ITERS=kmeans_iters, ACC=acc,
            COMPOSITE_KEY=composite)
        by_group = keys.view(rows * groups, group_slots)
        order = torch.sort(by_group, dim=-1).values if composite else torch.sort(by_group, dim=-1, stable=True)[1]
        layout = level_layout[level]
        new_perm = torch.empty(rows, num_slots, device=q.device, dtype=torch.int64)
        LAUNCH_COUNTER.launch(
            kernels['_apply_order'], (rows * groups, triton.cdiv(group_slots, block_n)), perm, order,
            layout if layout is not None else order, new_perm, perm_row_stride, num_slots, group_slots, groups,
            HAS_LAYOUT=layout is not None, COMPOSITE_KEY=composite, BLOCK_N=block_n)
        perm, perm_row_stride = new_perm, num_slots
    if num_levels == 0:
        perm = perm.expand(rows, num_slots).clone()
    return perm


def _attention_sizes(qkv: torch.Tensor, key_index: torch.Tensor, slots: int):
    head_dims = qkv.shape[-1]
    key_count = key_index.shape[1]
    return dict(HEAD_DIMS=head_dims, BLOCK_D=_next_pow2(head_dims, MIN_DOT_DIM),
                BLOCK_Q=_next_pow2(slots, MIN_DOT_DIM), BLOCK_K=_next_pow2(key_count, MIN_DOT_DIM),
                ACC=_acc_dtype(qkv.dtype))


def attention_forward(qkv: torch.Tensor, perm: torch.Tensor, key_index: torch.Tensor, slots: int,
                      scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """qkv (B, N, 3, H, d) with unit stride along d, perm (B*H, M), key_index (clusters, s + overlap) ->
    (output (B, N, H*d) in token order, logsumexp (B*H, M) of every query slot)."""
    images, num_tokens, _, heads, head_dims = qkv.shape
    num_slots = perm.shape[1]
    clusters = key_index.shape[0]
    out = torch.empty(images, num_tokens, heads * head_dims, device=qkv.device, dtype=qkv.dtype)
    lse = torch.empty(images * heads, num_slots, device=qkv.device,
                      dtype=torch.float64 if qkv.dtype == torch.float64 else torch.float32)
    LAUNCH_COUNTER.launch(
        _kernels()['_attention_forward'], (images * heads * clusters,), qkv, perm, key_index, out, lse,
        qkv.stride(0), qkv.stride(1), qkv.stride(2), qkv.stride(3), out.stride(0), out.stride(1), heads,
        num_tokens, num_slots, slots, key_index.shape[1], clusters, float(scale), PRECISION=_dot_precision(qkv),
        **_attention_sizes(qkv, key_index, slots))
    return out, lse


def attention_backward(qkv: torch.Tensor, perm: torch.Tensor, key_index: torch.Tensor, slots: int, scale: float,
                       lse: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """The gradient of qkv (B, N, 3, H, d), contiguous, for the output gradient (B, N, H*d)."""
    images, num_tokens, _, heads, head_dims = qkv.shape
    num_slots = perm.shape[1]
    clusters, key_count = key_index.shape
    overlap = key_count - slots
    grad_out = grad_out.contiguous()
    grad_qkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
    acc_dtype = torch.float64 if qkv.dtype == torch.float64 else torch.float32
    borrowed = torch.empty(images * heads * clusters * max(overlap, 1) * 2 * head_dims, device=qkv.device,
                           dtype=acc_dtype)
    kernels = _kernels()
    sizes = _attention_sizes(qkv, key_index, slots)
    strides = (grad_qkv.stride(0), grad_qkv.stride(1), grad_qkv.stride(2), grad_qkv.stride(3))
    if qkv.stride() != grad_qkv.stride():
        qkv = qkv.contiguous()
    LAUNCH_COUNTER.launch(
        kernels['_attention_backward'], (images * heads * clusters,), qkv, perm, key_index, grad_out, lse, grad_qkv,
        borrowed, *strides, grad_out.stride(0), grad_out.stride(1), heads, num_tokens, num_slots, slots, key_count,
        clusters, overlap, float(scale), PRECISION=_dot_precision(qkv), **sizes)
    if overlap > 0:
        LAUNCH_COUNTER.launch(
            kernels['_add_borrowed'], (images * heads * clusters,), perm, key_index, borrowed, grad_qkv, *strides,
            heads, num_tokens, num_slots, slots, key_count, clusters, overlap, HEAD_DIMS=head_dims,
            BLOCK_D=sizes['BLOCK_D'], BLOCK_O=_next_pow2(overlap), ACC=sizes['ACC'])
    return grad_qkv


class _FusedClusterAttention(torch.autograd.Function):
    """The fused attention with its fused backward; saves qkv (LePE keeps it alive anyway), the permutation
    and one logsumexp per query slot."""

    @staticmethod
    def forward(ctx, qkv, perm, key_index, slots, scale):
        out, lse = attention_forward(qkv, perm, key_index, slots, scale)
        ctx.slots, ctx.scale = slots, scale
        ctx.save_for_backward(qkv, perm, key_index, lse)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        qkv, perm, key_index, lse = ctx.saved_tensors
        return attention_backward(qkv, perm, key_index, ctx.slots, ctx.scale, lse, grad_out), None, None, None, None


def attend_triton(qkv: torch.Tensor, perm: torch.Tensor, key_index: torch.Tensor, slots: int,
                  scale: float) -> torch.Tensor:
    """Attention within clusters (``cluster_attention.attend_within_clusters``) in one fused kernel, with a
    fused backward when qkv needs a gradient."""
    if qkv.stride(-1) != 1:
        qkv = qkv.contiguous()
    if qkv.requires_grad and torch.is_grad_enabled():
        return _FusedClusterAttention.apply(qkv, perm, key_index, slots, scale)
    return attention_forward(qkv, perm, key_index, slots, scale)[0]
