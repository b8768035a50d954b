"""The bodies of FSLA's Triton kernels: plain functions, importable without torch (and without triton).

Kept apart from the launcher (``triton_kernels``: torch tensors, grids, dtype and arch choices) and from the
launch configurations (``triton_launch_configs``), so that ``boat_mm.analysis.kernel_resources`` can compile
every kernel for every NVIDIA architecture in an environment holding triton alone (the GPU image's triton 3.6),
as the launcher would configure it, and read its registers, spills and shared memory without a GPU.

* ``_split_keys``: per group of every (image, head) row, the half means, the soft 2-means iterations, the
  distance ratio and its sort key, in one program (the group's reduction is sequential in that program:
  deterministic, no floating-point atomics). float32 keys are one int64 (order-preserving ratio bits, then the
  slot), so one unstable ``torch.sort`` per level gives the stable order; float64 ratios take a stable sort.
* ``_apply_order``: the children's layout (pads to the group ends) and the new permutation.
* ``_attention_forward``: one program per cluster, FlashAttention-style: the cluster's queries stay in one tile
  while its keys (own slots, then the ones borrowed from the sibling) stream through in blocks of ``BLOCK_K``
  with an online softmax (running max and sum), so a tile never holds more key columns than it computes
  (69 keys: 80 columns in blocks of 16, where one 128-column tile wasted 46%). Each output row is written at its
  token's position (the clusters are a permutation: no scatter) and the row's logsumexp kept for the backward.
* ``_attention_backward``: per cluster, the same key blocks again: probabilities from the logsumexp, the
  gradients of each key block complete in the program (a key belongs to one cluster, a borrowed key to one
  sibling), the query gradient accumulated over blocks. delta = rowsum(dO * O) reads the forward's output
  (as FlashAttention does) instead of recomputing it. Own keys' gradients go to their tokens, borrowed keys'
  apart; ``_add_borrowed`` adds those in a second launch: no atomics, deterministic on every device.

Arithmetic: softmax and accumulators in ``ACC`` (fp32, or fp64 for fp64 inputs); fp16 / bf16 operands of the
products are multiplied in their dtype (``PRECISION``: 'ieee' or 'tf32' for fp32 operands, the launcher's
choice from torch's ``allow_tf32``).
"""
try:  # triton comes with CUDA builds of torch; a CPU-only build (or torch 2.1 on some platforms) may lack it
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installed torch
    tl = None
# The annotation that marks a kernel argument as compile-time (a class: Triton's interpreter does not read a
# string annotation as one).
constexpr = tl.constexpr if tl is not None else 'constexpr'

__all__ = ['KERNEL_BODIES', 'POINTER_ARGUMENTS']


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
                       BLOCK_Q: constexpr, BLOCK_K: constexpr, ACC: constexpr, PRECISION: constexpr):
    """One program per (row, cluster): softmax(q k^T * scale) v over the cluster's keys, in key blocks."""
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
    base = qkv_ptr + image * stride_image + head * stride_head + dims[None, :]
    q = tl.load(base + q_token[:, None] * stride_token, mask=q_real[:, None] & dim_ok[None, :], other=0.0)
    # The first key block holds the cluster's first own slot, a real token: every row's max is finite after it.
    row_max = tl.full([BLOCK_Q], float('-inf'), dtype=ACC)
    total = tl.zeros([BLOCK_Q], dtype=ACC)
    acc = tl.zeros([BLOCK_Q, BLOCK_D], dtype=ACC)
    for start in range(0, key_count, BLOCK_K):
        key = start + tl.arange(0, BLOCK_K)
        key_slot = tl.load(key_index_ptr + cluster * key_count + key, mask=key < key_count, other=0)
        k_token = tl.load(perm_ptr + row * num_slots + key_slot, mask=key < key_count, other=num_tokens)
        k_real = (key < key_count) & (k_token < num_tokens)
        k_mask = k_real[:, None] & dim_ok[None, :]
        k = tl.load(base + stride_which + k_token[:, None] * stride_token, mask=k_mask, other=0.0)
        v = tl.load(base + 2 * stride_which + k_token[:, None] * stride_token, mask=k_mask, other=0.0)
        logits = tl.dot(q, tl.trans(k), input_precision=PRECISION, out_dtype=ACC) * scale
        logits = tl.where(k_real[None, :], logits, float('-inf'))
        new_max = tl.maximum(row_max, tl.max(logits, axis=1))
        rescale = tl.exp(row_max - new_max)
        weights = tl.exp(logits - new_max[:, None])
        total = total * rescale + tl.sum(weights, axis=1)
        acc = acc * rescale[:, None] + tl.dot(weights.to(v.dtype), v, input_precision=PRECISION, out_dtype=ACC)
        row_max = new_max
    out = acc / total[:, None]
    tl.store(out_ptr + image * out_stride_image + q_token[:, None] * out_stride_token + head * HEAD_DIMS
             + dims[None, :], out.to(out_ptr.dtype.element_ty), mask=q_real[:, None] & dim_ok[None, :])
    tl.store(lse_ptr + row * num_slots + cluster * slots + query, row_max + tl.log(total), mask=query < slots)


def _attention_backward(qkv_ptr, perm_ptr, key_index_ptr, out_ptr, grad_out_ptr, lse_ptr, grad_qkv_ptr,
                        borrowed_ptr, stride_image, stride_token, stride_which, stride_head, out_stride_image,
                        out_stride_token, heads, num_tokens, num_slots, slots, key_count, clusters, overlap, scale,
                        HEAD_DIMS: constexpr, BLOCK_D: constexpr, BLOCK_Q: constexpr, BLOCK_K: constexpr,
                        ACC: constexpr, PRECISION: constexpr):
    """One program per (row, cluster): gradients of its queries and keys, key block by key block (grad_qkv has
    qkv's strides, out and grad_out the same ones; the borrowed keys' gradients go to ``borrowed``
    (rows, clusters, overlap, 2, d))."""
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
    q_mask = q_real[:, None] & dim_ok[None, :]
    offset = image * stride_image + head * stride_head + dims[None, :]
    q = tl.load(qkv_ptr + offset + q_token[:, None] * stride_token, mask=q_mask, other=0.0)
    out_rows = image * out_stride_image + q_token[:, None] * out_stride_token + head * HEAD_DIMS + dims[None, :]
    grad_out = tl.load(grad_out_ptr + out_rows, mask=q_mask, other=0.0)
    delta = tl.sum(grad_out.to(ACC) * tl.load(out_ptr + out_rows, mask=q_mask, other=0.0).to(ACC), axis=1)
    lse = tl.load(lse_ptr + row * num_slots + cluster * slots + query, mask=query < slots, other=0.0)
    grad_q = tl.zeros([BLOCK_Q, BLOCK_D], dtype=ACC)
    out_ty = grad_qkv_ptr.dtype.element_ty
    for start in range(0, key_count, BLOCK_K):
        key = start + tl.arange(0, BLOCK_K)
        key_slot = tl.load(key_index_ptr + cluster * key_count + key, mask=key < key_count, other=0)
        k_token = tl.load(perm_ptr + row * num_slots + key_slot, mask=key < key_count, other=num_tokens)
        k_real = (key < key_count) & (k_token < num_tokens)
        k_mask = k_real[:, None] & dim_ok[None, :]
        k = tl.load(qkv_ptr + offset + stride_which + k_token[:, None] * stride_token, mask=k_mask, other=0.0)
        v = tl.load(qkv_ptr + offset + 2 * stride_which + k_token[:, None] * stride_token, mask=k_mask, other=0.0)
        logits = tl.dot(q, tl.trans(k), input_precision=PRECISION, out_dtype=ACC) * scale
        weights = tl.where(q_real[:, None] & k_real[None, :], tl.exp(logits - lse[:, None]), 0.0)
        grad_v = tl.dot(tl.trans(weights.to(grad_out.dtype)), grad_out, input_precision=PRECISION, out_dtype=ACC)
        grad_weights = tl.dot(grad_out, tl.trans(v), input_precision=PRECISION, out_dtype=ACC)
        grad_logits = weights * (grad_weights - delta[:, None]) * scale
        grad_q += tl.dot(grad_logits.to(k.dtype), k, input_precision=PRECISION, out_dtype=ACC)
        grad_k = tl.dot(tl.trans(grad_logits.to(q.dtype)), q, input_precision=PRECISION, out_dtype=ACC)
        own = k_mask & (key < slots)[:, None]
        tl.store(grad_qkv_ptr + offset + stride_which + k_token[:, None] * stride_token, grad_k.to(out_ty),
                 mask=own)
        tl.store(grad_qkv_ptr + offset + 2 * stride_which + k_token[:, None] * stride_token, grad_v.to(out_ty),
                 mask=own)
        lent = k_mask & (key >= slots)[:, None]
        borrowed = borrowed_ptr + ((pid * overlap + (key - slots))[:, None] * 2) * HEAD_DIMS + dims[None, :]
        tl.store(borrowed, grad_k, mask=lent)
        tl.store(borrowed + HEAD_DIMS, grad_v, mask=lent)
    tl.store(grad_qkv_ptr + offset + q_token[:, None] * stride_token, grad_q.to(out_ty), mask=q_mask)


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


KERNEL_BODIES = (_split_keys, _apply_order, _attention_forward, _attention_backward, _add_borrowed)
# What each kernel's pointer arguments point at, for compiling it without tensors (``kernel_resources``):
# 'data' the input's dtype (fp32 / bf16 / fp16 / fp64), 'acc' the accumulation dtype (fp32, fp64 for fp64),
# 'index' int64 token / slot indices, 'key' the sort keys (int64 composite keys, float64 ratios for fp64).
POINTER_ARGUMENTS = {
    '_split_keys': dict(q_ptr='data', perm_ptr='index', key_ptr='key'),
    '_apply_order': dict(perm_ptr='index', order_ptr='index', layout_ptr='index', new_perm_ptr='index'),
    '_attention_forward': dict(qkv_ptr='data', perm_ptr='index', key_index_ptr='index', out_ptr='data',
                               lse_ptr='acc'),
    '_attention_backward': dict(qkv_ptr='data', perm_ptr='index', key_index_ptr='index', out_ptr='data',
                                grad_out_ptr='data', lse_ptr='acc', grad_qkv_ptr='data', borrowed_ptr='acc'),
    '_add_borrowed': dict(perm_ptr='index', key_index_ptr='index', borrowed_ptr='acc', grad_qkv_ptr='data'),
}
