"""FSLA's fused Triton kernels from torch: the launcher of the clustering and the cluster attention.

Why: the torch implementation (``clustering`` and ``cluster_attention``) issues ~415 device kernels per FSLA
forward at N=3136, about 70 per split level: on a GPU that is launch overhead and tiny memory-bound kernels.
Here one split level is three launches (``_split_keys``, a ``torch.sort``, ``_apply_order``), the attention one
forward and two backward kernels, all reading q, k, v in place in the qkv projection through the permutation.
The kernel bodies are ``triton_kernel_bodies``'s, their launch configurations per arithmetic
``triton_launch_configs``'s (chosen from ``boat_mm.analysis.kernel_resources``: no spills, shared memory within
every architecture's limit); this module maps tensors to them, and says for which (device, dtype, head dim) the
fused kernels run at all (``fused_ready``: the architectures the report shows compiled and fitting; elsewhere
the torch ops, said once in the log). The torch-facing ops with their fallback are ``fsla_ops``'s.

Arithmetic: fp32 whatever the input dtype (fp16 / bf16 operands of the attention products are multiplied in
their dtype and accumulated in fp32, as in FlashAttention); fp32 products are IEEE unless torch allows TF32
for matmuls; float64 inputs compute in float64, which is how the tests prove these kernels equal the torch path.

The kernels are compiled on first use (``_kernels``), so importing this module needs neither a GPU nor triton.
In a process started with ``TRITON_INTERPRET=1`` they run on CPU tensors in Triton's interpreter (the tests,
the GPU check's CPU rehearsal) with the default launch configurations (no architecture: the key-block loops run
as on a GPU; clustering takes bigger token blocks, fewer Python steps), elsewhere on CUDA.
"""
import functools
import logging
import os
from typing import Dict, Optional, Tuple

import torch

from ...utils.torch_features import constant_under_compile
from . import triton_launch_configs as configs
from .triton_kernel_bodies import KERNEL_BODIES

try:  # triton comes with CUDA builds of torch; a CPU-only build (or torch 2.1 on some platforms) may lack it
    import triton
except ImportError:  # pragma: no cover - depends on the installed torch
    triton = None

__all__ = ['triton_available', 'interpreting', 'fused_ready', 'device_arch', 'arithmetic_of', 'cluster_triton',
           'attention_forward', 'attention_backward', 'accumulation_dtype', 'LaunchCounter', 'LAUNCH_COUNTER',
           'LOADED_KERNELS']

logger = logging.getLogger(__name__)

# The kernels use triton 3's ``tl.dot(input_precision=..., out_dtype=...)``: the GPU image has 3.6, the pinned
# torch 3.8; torch 2.1 brings triton 2.1, whose runs take the torch path.
MIN_TRITON = (3, 0)
# Triton's interpreter (CPU tensors: the tests, the GPU check's rehearsal) before 3.8 turns a loop bound that is
# a kernel argument into a 1-element numpy array and fails on int() of it with numpy >= 2 (measured: 3.6.0 with
# numpy 2.4); the compiled kernels on a GPU are not concerned.
MIN_INTERPRETER_TRITON = (3, 8)
TRITON_VERSION = tuple(int(p) for p in triton.__version__.split('.')[:2]) if triton is not None else (0, 0)
# Tokens a clustering program handles at once in the interpreter, where every block operation is a numpy call:
# bigger blocks mean fewer Python steps (on a GPU: ``configs.SPLIT_CONFIG``).
INTERPRETER_TOKEN_BLOCK = 1024
TORCH_ARITHMETIC = {torch.float32: 'fp32', torch.bfloat16: 'bf16', torch.float16: 'fp16', torch.float64: 'fp64'}
# Compiled kernels as loaded on the device (name -> registers, spills, shared memory, warps, stages, blocks):
# what the GPU check prints beside the CPU report.
LOADED_KERNELS: Dict[str, dict] = {}


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

    def launch(self, name: str, grid, launch: configs.Launch, *args):
        """Launch kernel ``name`` on ``grid`` with its configuration ``launch`` (constexprs, warps, stages)."""
        if self.active:
            self.count += 1
        if self.dry:
            return
        self.inside = True
        try:
            compiled = _kernels()[name][grid](*args, num_warps=launch.num_warps, num_stages=launch.num_stages,
                                              **launch.triton_constexprs())
        finally:
            self.inside = False
        _record_loaded(name, compiled, launch)


LAUNCH_COUNTER = LaunchCounter()


def _record_loaded(name: str, compiled, launch: configs.Launch) -> None:
    """Keep what the driver loaded for ``name`` (a compiled kernel on a GPU; nothing in the interpreter)."""
    registers = getattr(compiled, 'n_regs', None)
    if registers is None:
        return
    LOADED_KERNELS[f"{name} {' '.join(f'{k}={v}' for k, v in sorted(launch.constexprs.items()))}"] = dict(
        kernel=name, registers=registers, spills=getattr(compiled, 'n_spills', None),
        shared=compiled.metadata.shared, num_warps=launch.num_warps, num_stages=launch.num_stages,
        blocks={k: v for k, v in launch.constexprs.items() if k.startswith('BLOCK_')})


def interpreting() -> bool:
    """Whether triton runs kernels in its interpreter (``TRITON_INTERPRET=1`` when triton was imported)."""
    if triton is None:
        return False
    knobs = getattr(triton, 'knobs', None)  # triton >= 3.4; before, the variable itself
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get('TRITON_INTERPRET', '0') == '1'


@functools.lru_cache(maxsize=None)
def _triton_available(kind: str) -> bool:
    if triton is None or TRITON_VERSION < MIN_TRITON:
        return False
    if interpreting():
        return kind == 'cpu' and TRITON_VERSION >= MIN_INTERPRETER_TRITON
    return kind == 'cuda'


@constant_under_compile
def triton_available(device: torch.device) -> bool:
    """Whether the fused kernels can run for tensors on ``device``: CUDA with triton, or CPU tensors in
    triton's interpreter."""
    return _triton_available(torch.device(device).type)


def _indexed(device: torch.device) -> torch.device:
    """``device`` with its index: a bare 'cuda' means the current CUDA device."""
    device = torch.device(device)
    if device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', torch.cuda.current_device())
    return device


@functools.lru_cache(maxsize=None)
def _arch_of(device: torch.device) -> Optional[int]:
    return configs.arch_of(torch.cuda.get_device_capability(device)) if device.type == 'cuda' else None


def device_arch(device: torch.device) -> Optional[int]:
    """The architecture number of a CUDA device (e.g. 90), None for CPU tensors in the interpreter; read once
    per device (every launch asks)."""
    return _arch_of(_indexed(device))


def arithmetic_of(tensor: torch.Tensor) -> str:
    """The attention arithmetic of ``tensor`` ('fp32', 'tf32', 'bf16', 'fp16', 'fp64'), None for other dtypes."""
    name = TORCH_ARITHMETIC.get(tensor.dtype)
    if name is None:
        return None
    return configs.arithmetic_name(name, tensor.device.type == 'cuda' and torch.backends.cuda.matmul.allow_tf32)


@functools.lru_cache(maxsize=None)
def _fused_ready(device: torch.device, dtype: torch.dtype, head_dims: int, slots: int) -> bool:
    arch = device_arch(device)
    name = TORCH_ARITHMETIC.get(dtype)
    if name is None:
        reason = f'{dtype} tensors'
    else:  # TF32 can be switched on at any time: both arithmetics of fp32 must run fused
        reason = next(filter(None, (configs.fused_refusal(arch, arithmetic, head_dims, slots)
                                    for arithmetic in (name, configs.arithmetic_name(name, True)))), None)
    if reason is not None:
        logger.warning('FSLA runs the torch ops instead of the fused Triton kernels for %s on %s', reason, device)
    return reason is None


@constant_under_compile
def fused_ready(device: torch.device, dtype: torch.dtype, head_dims: int, slots: int = 0) -> bool:
    """Whether the fused kernels run for ``dtype`` tensors with ``head_dims``-wide heads on ``device`` (which
    ``triton_available``), and for the attention (``slots`` > 0) of clusters of ``slots`` query slots: the
    resource report's architectures for that arithmetic (TF32 or not), the head dims and tiles it shows fitting.
    Elsewhere the log says once that the torch ops run."""
    return _fused_ready(_indexed(device), dtype, int(head_dims), int(slots))


@functools.lru_cache(maxsize=None)
def _kernels() -> dict:
    """The kernels, compiled on first use: ``triton.jit`` gives Triton's interpreter instead when the process
    started with ``TRITON_INTERPRET=1`` (read by triton at its import, also for its own library functions)."""
    return {body.__name__: triton.jit(body) for body in KERNEL_BODIES}


def _block_cap(tensor: torch.Tensor) -> int:
    """Tokens per clustering block: the interpreter's (fewer Python steps), or 0 for the GPU table's."""
    return INTERPRETER_TOKEN_BLOCK if tensor.device.type == 'cpu' else 0


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
    arithmetic = TORCH_ARITHMETIC[q.dtype]
    composite = q.dtype != torch.float64
    perm = torch.arange(num_slots, device=q.device)
    perm_row_stride = 0  # level 0 reads the identity, shared by every row
    for level in range(num_levels):
        groups = 1 << level
        group_slots = num_slots >> level
        split = configs.split_launch(arithmetic, head_dims, group_slots, kmeans_iters, _block_cap(q),
                                     device_arch(q.device))
        keys = torch.empty(rows, num_slots, device=q.device, dtype=torch.int64 if composite else torch.float64)
        LAUNCH_COUNTER.launch(
            '_split_keys', (rows * groups,), split, q, perm, keys, q.stride(0), q.stride(1), q.stride(2),
            perm_row_stride, heads, num_tokens, num_slots, group_slots, groups, float(temperature), float(eps))
        by_group = keys.view(rows * groups, group_slots)
        order = torch.sort(by_group, dim=-1).values if composite else torch.sort(by_group, dim=-1, stable=True)[1]
        layout = level_layout[level]
        new_perm = torch.empty(rows, num_slots, device=q.device, dtype=torch.int64)
        apply = configs.order_launch(arithmetic, group_slots, layout is not None, _block_cap(q))
        LAUNCH_COUNTER.launch(
            '_apply_order', (rows * groups, triton.cdiv(group_slots, apply.constexprs['BLOCK_N'])), apply, perm,
            order, layout if layout is not None else order, new_perm, perm_row_stride, num_slots, group_slots,
            groups)
        perm, perm_row_stride = new_perm, num_slots
    if num_levels == 0:
        perm = perm.expand(rows, num_slots).clone()
    return perm


def _attention_launch(kernel: str, qkv: torch.Tensor, key_index: torch.Tensor, slots: int) -> configs.Launch:
    return configs.attention_launch(kernel, arithmetic_of(qkv), qkv.shape[-1], slots, key_index.shape[1],
                                    device_arch(qkv.device))


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels accumulate (and keep logsumexps) in: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def attention_forward(qkv: torch.Tensor, perm: torch.Tensor, key_index: torch.Tensor, slots: int,
                      scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """qkv (B, N, 3, H, d) with unit stride along d, perm (B*H, M), key_index (clusters, s + overlap) ->
    (output (B, N, H*d) in token order, logsumexp (B*H, M) of every query slot)."""
    if qkv.stride(-1) != 1:
        qkv = qkv.contiguous()
    images, num_tokens, _, heads, head_dims = qkv.shape
    num_slots = perm.shape[1]
    clusters = key_index.shape[0]
    out = torch.empty(images, num_tokens, heads * head_dims, device=qkv.device, dtype=qkv.dtype)
    lse = torch.empty(images * heads, num_slots, device=qkv.device, dtype=accumulation_dtype(qkv.dtype))
    LAUNCH_COUNTER.launch(
        '_attention_forward', (images * heads * clusters,), _attention_launch('_attention_forward', qkv, key_index,
                                                                              slots),
        qkv, perm, key_index, out, lse, qkv.stride(0), qkv.stride(1), qkv.stride(2), qkv.stride(3), out.stride(0),
        out.stride(1), heads, num_tokens, num_slots, slots, key_index.shape[1], clusters, float(scale))
    return out, lse


def attention_backward(qkv: torch.Tensor, perm: torch.Tensor, key_index: torch.Tensor, slots: int, scale: float,
                       out: torch.Tensor, lse: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """The gradient of qkv (B, N, 3, H, d), contiguous, for the output gradient (B, N, H*d) of the forward's
    ``out`` and ``lse``."""
    images, num_tokens, _, heads, head_dims = qkv.shape
    num_slots = perm.shape[1]
    clusters, key_count = key_index.shape
    overlap = key_count - slots
    grad_out, out = grad_out.contiguous(), out.contiguous()
    grad_qkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
    borrowed = torch.empty(images * heads * clusters * max(overlap, 1) * 2 * head_dims, device=qkv.device,
                           dtype=accumulation_dtype(qkv.dtype))
    strides = (grad_qkv.stride(0), grad_qkv.stride(1), grad_qkv.stride(2), grad_qkv.stride(3))
    if qkv.stride() != grad_qkv.stride():
        qkv = qkv.contiguous()
    LAUNCH_COUNTER.launch(
        '_attention_backward', (images * heads * clusters,),
        _attention_launch('_attention_backward', qkv, key_index, slots), qkv, perm, key_index, out, grad_out, lse,
        grad_qkv, borrowed, *strides, grad_out.stride(0), grad_out.stride(1), heads, num_tokens, num_slots, slots,
        key_count, clusters, overlap, float(scale))
    if overlap > 0:
        LAUNCH_COUNTER.launch(
            '_add_borrowed', (images * heads * clusters,),
            configs.add_borrowed_launch(arithmetic_of(qkv), head_dims, overlap), perm, key_index, borrowed,
            grad_qkv, *strides, heads, num_tokens, num_slots, slots, key_count, clusters, overlap)
    return grad_qkv
