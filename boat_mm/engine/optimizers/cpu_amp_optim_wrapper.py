"""bf16 mixed-precision training where there is no GPU: mmengine's ``AmpOptimWrapper`` refuses to start
without CUDA, although the autocast it enters (``mmengine.runner.amp.autocast``) runs on the CPU.

``tools/train.py`` swaps an ``AmpOptimWrapper`` of dtype bfloat16 for ``CPUAmpOptimWrapper`` on a machine
without CUDA (``boat_mm.engine.runner_setup.adapt_cfg_to_device``), so that the same ``*_bf16.py`` config
trains on a GPU cluster and on a CPU: autocast to bf16 on the CPU, no loss scaling (bf16 has fp32's range,
which is why GPU bf16 runs need none either). fp16 needs its loss scaler, a CUDA one: refused on the CPU.

mmcv's CPU box kernels have no bf16 (``nms`` reads ``data_ptr<float>``, ``roi_align`` dispatches float
types only), and under CPU autocast mmdet hands them bf16 (its anchors take the dtype of the bf16 scores; the
RoI features come from bf16 convolutions): inside a training step the wrapper gives them float32 copies
(``_float32_box_ops``).
"""
import importlib
from contextlib import contextmanager

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

__all__ = ['CPUAmpOptimWrapper', 'CPU_AMP_DTYPES']

CPU_AMP_DTYPES = ('bfloat16',)  # what CPUAmpOptimWrapper trains in
# mmcv box ops whose CPU kernels have no bf16, by module: called through their module attribute (mmcv's
# batched_nms looks its nms up by name, RoIAlign its roi_align).
FLOAT32_BOX_OPS = {'mmcv.ops.nms': ('nms',), 'mmcv.ops.roi_align': ('roi_align',)}


def _in_float32(op):
    """``op`` run on float32 copies of its bf16 / fp16 tensor arguments, its floating outputs cast back to that
    dtype (callers allocate around them in it, e.g. mmdet's RoI feature buffer)."""
    low_precision = (torch.bfloat16, torch.float16)

    def back(value, dtype):
        if torch.is_tensor(value) and value.is_floating_point():
            return value.to(dtype)
        return type(value)(back(v, dtype) for v in value) if isinstance(value, tuple) else value

    def op_in_float32(*args, **kwargs):
        dtype = next((a.dtype for a in args if torch.is_tensor(a) and a.dtype in low_precision), None)
        if dtype is None:
            return op(*args, **kwargs)
        return back(op(*[a.float() if torch.is_tensor(a) and a.dtype in low_precision else a for a in args],
                       **kwargs), dtype)
    op_in_float32.__wrapped__ = op
    return op_in_float32


@contextmanager
def _float32_box_ops():
    """Within the context, ``FLOAT32_BOX_OPS`` take float32 copies of bf16 / fp16 tensor arguments."""
    patched = []
    try:
        for module_name, names in FLOAT32_BOX_OPS.items():
            try:
                module = importlib.import_module(module_name)
            except ImportError:  # no mmcv ops: nothing to patch
                continue
            for name in names:
                patched.append((module, name, getattr(module, name)))
                setattr(module, name, _in_float32(getattr(module, name)))
        yield
    finally:
        for module, name, op in reversed(patched):
            setattr(module, name, op)


# Registered in mmengine's root registry, which every toolbox's registry falls back to.
@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(AmpOptimWrapper):
    """``AmpOptimWrapper`` (its autocast context, state dict and step) for the CPU, bf16 only: the loss scaler
    is a disabled ``GradScaler`` (scales by 1, steps the optimizer as is, saves nothing)."""

    def __init__(self, loss_scale='dynamic', dtype='bfloat16', use_fsdp: bool = False, **kwargs):
        dtype_name = str(dtype).replace('torch.', '')
        if dtype_name not in CPU_AMP_DTYPES:
            raise ValueError(f'{type(self).__name__}: mixed precision on the CPU trains in {CPU_AMP_DTYPES}, got '
                             f'{dtype_name}; float16 needs a CUDA loss scaler (train the *_bf16 config here)')
        if use_fsdp:
            raise ValueError(f'{type(self).__name__}: FSDP needs a GPU')
        OptimWrapper.__init__(self, **kwargs)  # AmpOptimWrapper.__init__ asserts a GPU
        self._scale_update_param = None
        self.loss_scaler = torch.amp.GradScaler('cpu', enabled=False) if hasattr(torch.amp, 'GradScaler') \
            else torch.cuda.amp.GradScaler(enabled=False)
        self.cast_dtype = getattr(torch, dtype_name)

    @contextmanager
    def optim_context(self, model):
        """``AmpOptimWrapper``'s (bf16 autocast, gradient accumulation) with float32 mmcv box kernels."""
        with super().optim_context(model), _float32_box_ops():
            yield
