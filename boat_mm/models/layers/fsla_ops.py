"""FSLA's fused kernels as torch operations: custom ops that torch.compile and CUDA graphs keep, and the safe
fallback to the torch ops when a fused kernel fails on a user's GPU.

* ``boat_mm::fsla_cluster`` (the clustering), ``boat_mm::fsla_attention`` (the attention within clusters, with
  its logsumexp) and ``boat_mm::fsla_attention_backward``, registered with ``torch.library.custom_op`` (torch
  >= 2.6): each has a fake implementation (shapes and dtypes only, for tracing) and the attention an autograd
  formula, so that torch.compile (mmengine's ``compile=True``, ``mode='reduce-overhead'``) records three ops
  where it used to record ~415 torch ops, and runs the fused kernels inside its graph. The torch ops stay for
  torch.export, ONNX and torch < 2.6 (``clustering.kernel_choice``), where an autograd.Function runs the same
  kernels eagerly.
* If a fused kernel fails to compile or launch (an architecture, driver or triton the resource report did not
  see), one warning names the kernel and the error, and from then on that group of kernels (clustering or
  attention) runs the torch ops on that device and arithmetic, inside the op: a compiled graph that holds the
  op keeps working, and the result is the torch ops' result, never a half-written tensor.
"""
import warnings
from typing import Callable, Dict, List, Tuple

import torch

from ...utils.torch_features import torch_at_least
from . import triton_kernels

__all__ = ['CUSTOM_OPS', 'cluster', 'attend', 'failed_kernels', 'FUSED_KERNEL_FAILED', 'TORCH_IMPLEMENTATIONS',
           'torch_implementation', 'ATTENTION_CONSTANT_INPUTS']

# torch.library.custom_op with register_fake / register_autograd as used here: torch >= 2.6 (the floor;
# 2.4 had a first version of the API).
CUSTOM_OPS = torch_at_least(2, 6) and hasattr(torch.library, 'custom_op')
CLUSTERING, ATTENTION = 'clustering', 'attention'
FUSED_KERNEL_FAILED = ('FSLA: the fused Triton kernel {kernel} failed on {where} ({error}); FSLA runs the torch ops '
                       'there from now on')
# The attention's inputs after qkv, none of which takes a gradient: perm, key_index, slots, scale, cluster_size,
# overlap.
ATTENTION_CONSTANT_INPUTS = 6
# (kernel group, device, arithmetic) -> the failure, for the rest of the process.
_FAILED: Dict[Tuple[str, str, str], str] = {}
# The torch implementations the fallback runs ('plan', 'cluster', 'attend', 'attention_backward'), registered by
# the modules that hold them (``clustering``, ``cluster_attention``: they dispatch to this module, which therefore
# cannot import them).
TORCH_IMPLEMENTATIONS: Dict[str, Callable] = {}


def torch_implementation(name: str) -> Callable:
    """Decorator: register the torch implementation ``name`` of an op's fallback."""
    def register(function: Callable) -> Callable:
        TORCH_IMPLEMENTATIONS[name] = function
        return function
    return register


def failed_kernels() -> Dict[Tuple[str, str, str], str]:
    """The kernel groups that failed in this process: (group, device, arithmetic) -> the error."""
    return dict(_FAILED)


def _failure_key(group: str, tensor: torch.Tensor) -> Tuple[str, str, str]:
    arch = triton_kernels.device_arch(tensor.device)
    where = f'sm_{arch}' if arch is not None else str(tensor.device)
    return group, where, str(triton_kernels.arithmetic_of(tensor))


def _run_fused(group: str, kernel: str, tensor: torch.Tensor, fused, fallback):
    """``fused()`` unless this group failed before on this device and arithmetic; on an exception, warn once
    (naming ``kernel`` and the error), remember the failure and return ``fallback()``."""
    key = _failure_key(group, tensor)
    if key in _FAILED:
        return fallback()
    try:
        return fused()
    except Exception as error:  # any compile / launch failure: the torch ops give the result instead
        _FAILED[key] = f'{type(error).__name__}: {error}'
        warnings.warn(FUSED_KERNEL_FAILED.format(kernel=kernel, where=key[1] + ' ' + key[2], error=_FAILED[key]),
                      RuntimeWarning, stacklevel=2)
        return fallback()


def _plan(num_tokens: int, cluster_size: int, overlap: int, device: torch.device):
    return TORCH_IMPLEMENTATIONS['plan'](num_tokens, cluster_size, overlap, device)


# ---------------------------------------------------------------------------------------------------- clustering
def _cluster(q: torch.Tensor, layouts: List[torch.Tensor], num_tokens: int, num_levels: int, num_slots: int,
             cluster_size: int, overlap: int, kmeans_iters: int, temperature: float, eps: float) -> torch.Tensor:
    def fused():
        level_layout = tuple(layouts) if layouts else (None,) * num_levels
        return triton_kernels.cluster_triton(q, num_tokens, num_levels, num_slots, level_layout, kmeans_iters,
                                             temperature, eps)

    def fallback():
        plan = _plan(num_tokens, cluster_size, overlap, q.device)
        return TORCH_IMPLEMENTATIONS['cluster'](q.reshape(-1, q.shape[-2], q.shape[-1]), plan, kmeans_iters,
                                                temperature)
    return _run_fused(CLUSTERING, '_split_keys / _apply_order', q, fused, fallback)


# ----------------------------------------------------------------------------------------------------- attention
def _attention(qkv: torch.Tensor, perm: torch.Tensor, key_index: torch.Tensor, slots: int, scale: float,
               cluster_size: int, overlap: int) -> Tuple[torch.Tensor, torch.Tensor]:
    def fallback():
        out = TORCH_IMPLEMENTATIONS['attend'](qkv, perm, _plan(qkv.shape[1], cluster_size, overlap, qkv.device),
                                              scale)
        # The logsumexp is the fused backward's alone, which does not run after a fallback.
        return out, qkv.new_zeros(perm.shape, dtype=triton_kernels.accumulation_dtype(qkv.dtype))
    return _run_fused(ATTENTION, '_attention_forward', qkv,
                      lambda: triton_kernels.attention_forward(qkv, perm, key_index, slots, scale), fallback)


def _attention_backward(qkv: torch.Tensor, perm: torch.Tensor, key_index: torch.Tensor, out: torch.Tensor,
                        lse: torch.Tensor, grad_out: torch.Tensor, slots: int, scale: float, cluster_size: int,
                        overlap: int) -> torch.Tensor:
    def fallback():
        plan = _plan(qkv.shape[1], cluster_size, overlap, qkv.device)
        return TORCH_IMPLEMENTATIONS['attention_backward'](qkv, perm, plan, scale, grad_out)
    return _run_fused(ATTENTION, '_attention_backward / _add_borrowed', qkv,
                      lambda: triton_kernels.attention_backward(qkv, perm, key_index, slots, scale, out, lse,
                                                                grad_out), fallback)


def _attention_fake(qkv, perm, key_index, slots, scale, cluster_size, overlap):
    images, num_tokens, _, heads, head_dims = qkv.shape
    return (qkv.new_empty(images, num_tokens, heads * head_dims),
            qkv.new_empty(perm.shape, dtype=triton_kernels.accumulation_dtype(qkv.dtype)))


def _setup_attention_context(ctx, inputs, output):
    """What the attention's backward needs: qkv, the clusters, the forward's output and logsumexp."""
    qkv, perm, key_index, slots, scale, cluster_size, overlap = inputs
    out, lse = output
    ctx.save_for_backward(qkv, perm, key_index, out, lse)
    ctx.arguments = (slots, scale, cluster_size, overlap)


def _input_gradients(backward, ctx, grad_out) -> tuple:
    """The gradients of the attention's inputs (qkv's alone) from ``backward`` (the op or its function)."""
    qkv, perm, key_index, out, lse = ctx.saved_tensors
    grad_qkv = backward(qkv, perm, key_index, out, lse, grad_out, *ctx.arguments)
    return (grad_qkv,) + (None,) * ATTENTION_CONSTANT_INPUTS


class _FusedClusterAttention(torch.autograd.Function):
    """The fused attention and its fused backward without custom ops (torch < 2.6)."""

    @staticmethod
    def forward(ctx, qkv, perm, key_index, slots, scale, cluster_size, overlap):
        inputs = (qkv, perm, key_index, slots, scale, cluster_size, overlap)
        output = _attention(*inputs)
        _setup_attention_context(ctx, inputs, output)
        return output[0]

    @staticmethod
    def backward(ctx, grad_out):
        return _input_gradients(_attention_backward, ctx, grad_out)


if CUSTOM_OPS:
    _cluster_op = torch.library.custom_op('boat_mm::fsla_cluster', _cluster, mutates_args=())
    _attention_op = torch.library.custom_op('boat_mm::fsla_attention', _attention, mutates_args=())
    _attention_backward_op = torch.library.custom_op('boat_mm::fsla_attention_backward', _attention_backward,
                                                     mutates_args=())

    @_cluster_op.register_fake
    def _cluster_fake(q, layouts, num_tokens, num_levels, num_slots, cluster_size, overlap, kmeans_iters,
                      temperature, eps):
        return q.new_empty(q.shape[0] * q.shape[1], num_slots, dtype=torch.long)

    _attention_op.register_fake(_attention_fake)

    @_attention_backward_op.register_fake
    def _attention_backward_fake(qkv, perm, key_index, out, lse, grad_out, slots, scale, cluster_size, overlap):
        return torch.empty_like(qkv, memory_format=torch.contiguous_format)

    def _attention_gradient(ctx, grad_out, grad_lse):
        return _input_gradients(_attention_backward_op, ctx, grad_out)

    _attention_op.register_autograd(_attention_gradient, setup_context=_setup_attention_context)


def cluster(q: torch.Tensor, plan, kmeans_iters: int, temperature: float, eps: float) -> torch.Tensor:
    """The fused clustering of q (B, H, R, d) with ``plan``: perm (B*H, M) (``balanced_hierarchical_clustering``)."""
    layouts = list(plan.level_layout) if plan.has_padding else []
    arguments = (q, layouts, plan.num_tokens, plan.num_levels, plan.num_slots, plan.cluster_size,
                 plan.requested_overlap, int(kmeans_iters), float(temperature), float(eps))
    return _cluster_op(*arguments) if CUSTOM_OPS else _cluster(*arguments)


def attend(qkv: torch.Tensor, perm: torch.Tensor, plan, scale: float) -> torch.Tensor:
    """The fused attention within clusters (``attend_within_clusters``), differentiable."""
    if qkv.stride(-1) != 1:
        qkv = qkv.contiguous()
    arguments = (qkv, perm, plan.key_index, plan.slots_per_cluster, float(scale), plan.cluster_size,
                 plan.requested_overlap)
    if CUSTOM_OPS:
        return _attention_op(*arguments)[0]
    if qkv.requires_grad and torch.is_grad_enabled():
        return _FusedClusterAttention.apply(*arguments)
    return _attention(*arguments)[0]
