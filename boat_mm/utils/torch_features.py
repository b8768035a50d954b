"""What the installed torch can do, detected once: boat_mm runs on torch 2.1 to 2.15.

Everything a user trains and tests with works from torch 2.1. The features that need a newer torch ask
``require_torch`` first, so an older torch gives one line naming the version needed instead of an
AttributeError deep inside a tool. The fallbacks here (``is_compiling``, ``autocast_available``) give the
same answer on every version; ``constant_under_compile`` keeps what only depends on Python values (clustering
plans, window masks) out of compiled graphs.
"""
import functools

import torch

__all__ = ['ONNX_EXPORT', 'TORCH_VERSION', 'torch_at_least', 'require_torch', 'TorchTooOldError', 'is_compiling',
           'is_exporting', 'autocast_available', 'constant_under_compile', 'GATED_FEATURES']

TORCH_VERSION = tuple(int(part) for part in torch.__version__.split('+')[0].split('.')[:2])

# feature -> the torch it needs (and why): the README's compatibility table is this dict.
ONNX_EXPORT = 'ONNX export (torch.onnx.export(dynamo=True), tools/deployment/export_onnx.py)'
GATED_FEATURES = {
    ONNX_EXPORT: (2, 5),  # the dynamo exporter's `dynamo=True` argument
}


class TorchTooOldError(RuntimeError):
    """A feature that the installed torch is too old for."""


def torch_at_least(major: int, minor: int) -> bool:
    return TORCH_VERSION >= (major, minor)


def require_torch(feature: str) -> None:
    """Raise ``TorchTooOldError`` (one line) if ``feature`` (a key of ``GATED_FEATURES``) needs a newer torch."""
    needed = GATED_FEATURES[feature]
    if not torch_at_least(*needed):
        raise TorchTooOldError(f'{feature} needs torch >= {needed[0]}.{needed[1]}; this is torch {torch.__version__}')


# True inside torch.compile / torch.export tracing (``torch.compiler.is_compiling`` came in torch 2.3; before,
# torch._dynamo's). Chosen once: it runs in every forward.
def _dynamo_is_compiling() -> bool:
    return torch._dynamo.is_compiling()


is_compiling = getattr(getattr(torch, 'compiler', None), 'is_compiling', None) or _dynamo_is_compiling


def _exporting_unknown() -> bool:
    return True


# True inside torch.export tracing (the ONNX exporter's too), as opposed to torch.compile. Where torch cannot tell
# (no ``torch.compiler.is_exporting``), every trace counts as an export: it records the plain torch ops.
is_exporting = getattr(getattr(torch, 'compiler', None), 'is_exporting', None) or _exporting_unknown


def _autocast_devices_before_2_4(device_type: str) -> bool:
    return device_type in ('cpu', 'cuda')


def constant_under_compile(function):
    """Wrap ``function`` (of Python values: sizes, a device) so that torch.compile calls it once while tracing
    and holds its result (tensors, None, numbers, or tuples of them) as a constant of the graph, instead of
    tracing how it is built.

    Without it, a plan or mask built from Python loops becomes hundreds of small ops that every compiled call
    runs again, on the CPU (where the builder makes its tensors) with copies to the GPU: on the GPU machine
    inductor then had to compile C++ kernels for them, and failed (2026-12-04). The call dynamo makes is the
    ``constant_call`` attribute, marked as ``torch._dynamo.assume_constant_result`` marks a function (its whole
    body; set here without importing torch._dynamo, which costs 2.6 s). Its result comes boxed in a tuple:
    dynamo then reads it like a global (graph inputs guarded on identity), where a bare tensor result broke
    the trace as soon as two results of different shapes met in one graph (torch 2.14). torch.export
    (non-strict) and TorchScript tracing run the function as plain Python: they still record it."""
    def constant_call(*args, **kwargs):
        return (function(*args, **kwargs),)
    constant_call._dynamo_marked_constant = True

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        return constant_call(*args, **kwargs)[0]
    wrapper.constant_call = constant_call
    return wrapper


# Whether torch.autocast supports a device type (``torch.amp.is_autocast_available`` came in torch 2.4), chosen
# once: it runs in every clustering call. A constant under torch.compile: dynamo of torch 2.11 cannot trace the
# builtin behind it (a graph break).
autocast_available = constant_under_compile(getattr(torch.amp, 'is_autocast_available', None)
                                            or _autocast_devices_before_2_4)
