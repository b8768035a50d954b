"""Attention within the clusters of FSLA: every query attends to its own cluster's keys and ``overlap`` keys of
its sibling (BOAT_SPEC.md section 3), in the torch implementation (CPU, exported graphs, no triton, and the fused
ops' fallback); CUDA runs take the fused kernels instead (``fsla_ops``, chosen by ``clustering.kernel_choice``)."""
import math
import os
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from . import fsla_ops
from .clustering import CACHE_CHUNK_ELEMENTS, TRITON, ClusterPlan, kernel_choice
from .transformer_layers import is_tracing

__all__ = ['attend_within_clusters', 'attend_with_torch_ops', 'attention_backward_with_torch_ops',
           'CLUSTER_BACKWARD_ENV', 'ATTENTION_CHUNK_ELEMENTS']

# qkv elements per chunk of images in the CPU training path of the cluster attention (see _image_chunks).
ATTENTION_CHUNK_ELEMENTS = CACHE_CHUNK_ELEMENTS
# ``BOAT_MM_CLUSTER_BACKWARD=autograd`` makes eager training take autograd's backward of the gathers (scatter-
# adds, every gathered copy kept), the implementation before issue 22: for before/after benchmarks only.
CLUSTER_BACKWARD_ENV = 'BOAT_MM_CLUSTER_BACKWARD'


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


def _attention_gradients(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                         scale: float, grad_out: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of q, k, v of softmax(q k^T * scale, masked) v for the output gradient, written out (no
    autograd: this also runs inside a custom op's backward, where no autograd graph is recorded)."""
    logits = (q @ k.transpose(-1, -2)) * scale
    if mask is not None:
        logits = logits.masked_fill(~mask, -math.inf)
    weights = torch.softmax(logits, dim=-1)
    grad_v = weights.transpose(-1, -2) @ grad_out
    grad_weights = grad_out @ v.transpose(-1, -2)
    delta = (grad_weights * weights).sum(dim=-1, keepdim=True)  # = rowsum(grad_out * out)
    grad_logits = weights * (grad_weights - delta) * scale
    return grad_logits @ k, grad_logits.transpose(-1, -2) @ q, grad_v


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
        grad_q, grad_k, grad_v = _attention_gradients(q_slots, k_keys, v_keys, mask, scale, grad_slots)
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


@fsla_ops.torch_implementation('attend')
def attend_with_torch_ops(qkv: torch.Tensor, perm: torch.Tensor, plan: ClusterPlan, scale: float) -> torch.Tensor:
    """The attention within clusters as torch ops, on any device (the fused ops' fallback)."""
    return _attend(qkv, perm, plan, scale, 0.0)


@fsla_ops.torch_implementation('attention_backward')
def attention_backward_with_torch_ops(qkv: torch.Tensor, perm: torch.Tensor, plan: ClusterPlan, scale: float,
                                      grad_out: torch.Tensor) -> torch.Tensor:
    """The gradient of qkv for the output gradient ``grad_out``, as torch ops on any device (the fused ops'
    fallback): ``_ClusterAttention``'s backward, recomputing the attention."""
    return _cluster_attention_backward(qkv, perm, plan, scale, grad_out, (), _borrowed_key_positions(plan))


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

    Runs with the Triton kernels (``kernel_choice``: CUDA by default, eager or compiled) take ``fsla_ops.attend``:
    one fused kernel, and two for the backward. Elsewhere, when qkv needs a gradient in an eager run, the
    backward is ``_ClusterAttention``'s: no gathered copy is
    kept for it and no scatter-add undoes the gathers. Traced graphs (torch.compile, torch.export, ONNX)
    and attention dropout take the same computation as plain torch ops, whose backward autograd derives."""
    if dropout_p == 0.0 and kernel_choice(qkv.device, qkv.dtype, qkv.shape[-1], plan.slots_per_cluster) == TRITON:
        return fsla_ops.attend(qkv, perm, plan, scale)
    gather_free = os.environ.get(CLUSTER_BACKWARD_ENV, 'gather') != 'autograd'
    if gather_free and qkv.requires_grad and torch.is_grad_enabled() and not is_tracing() and dropout_p == 0.0:
        return _ClusterAttention.apply(qkv, perm, plan, scale)
    return _attend(qkv, perm, plan, scale, dropout_p)
