"""Fixes that modern PyTorch forces on mmengine 0.10.7, applied once by ``import boat_mm``.

1. Safe checkpoint loading: since torch 2.6 ``torch.load`` defaults to ``weights_only=True``, and mmengine
0.10.7 calls it without the argument, so loading or resuming any checkpoint mmengine itself wrote fails
(its ``message_hub`` holds ``HistoryBuffer`` objects with numpy arrays and scalars). We keep the safe
loader and allow-list exactly what such checkpoints contain, so a checkpoint carrying any other pickle
payload is still refused without running it. Nothing installed is edited.

2. CPU distributed training (``enable_cpu_distributed``, called by the tools): see below.
"""
import numpy as np
import torch
from torch.serialization import add_safe_globals

__all__ = ['allow_mmengine_checkpoint_globals', 'MMENGINE_CHECKPOINT_GLOBALS', 'enable_cpu_distributed']


def _numpy_multiarray():
    # numpy 2 moved numpy.core to numpy._core; pickles name whichever wrote them.
    core = getattr(np, '_core', None) or np.core
    return core.multiarray


def _history_buffer_getattr(obj, name):
    """Stand-in for ``builtins.getattr`` inside checkpoints.

    ``HistoryBuffer._statistics_methods`` pickles its functions as ``getattr(HistoryBuffer, 'mean')``.
    Only that is allowed: a getattr on anything else (the usual gadget of pickle exploits) is refused."""
    from mmengine.logging import HistoryBuffer
    value = HistoryBuffer.__dict__.get(name) if obj is HistoryBuffer else None
    if not callable(value) or name.startswith('_'):
        raise torch.serialization.pickle.UnpicklingError(
            f'refused getattr({getattr(obj, "__name__", type(obj).__name__)}, {name!r}) in a checkpoint: '
            'only HistoryBuffer statistics methods may be referenced')
    return getattr(obj, name)


def _numpy_dtype_classes():
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is None:
        return []
    return [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType') and isinstance(getattr(dtypes, n), type)]


def _build_allow_list():
    from mmengine.logging import HistoryBuffer
    multiarray = _numpy_multiarray()
    allowed = [HistoryBuffer, np.ndarray, np.dtype, (_history_buffer_getattr, 'builtins.getattr')]
    for package in ('numpy._core', 'numpy.core'):
        allowed.append((multiarray._reconstruct, f'{package}.multiarray._reconstruct'))
        allowed.append((multiarray.scalar, f'{package}.multiarray.scalar'))
    allowed.extend(_numpy_dtype_classes())
    return allowed


MMENGINE_CHECKPOINT_GLOBALS = _build_allow_list()


def allow_mmengine_checkpoint_globals() -> None:
    """Allow-list the globals of mmengine checkpoints for ``torch.load(weights_only=True)``."""
    add_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)


allow_mmengine_checkpoint_globals()


# --- CPU distributed training ------------------------------------------------------------------
# mmengine 0.10.7 assumes a GPU per process: ``_init_dist_pytorch`` calls ``torch.cuda.set_device``
# unconditionally, ``_init_dist_slurm`` divides by ``torch.cuda.device_count()``, and the Runner passes
# ``device_ids=[LOCAL_RANK]`` to DDP. Users debug on laptops and our CI has no GPU, so on a machine
# without CUDA we initialise the process group directly (gloo) and wrap without device ids
# (see ``boat_mm.training.adapt_cfg_to_device``).

def _init_dist_pytorch_cpu_aware(backend, init_backend='torch', **kwargs):
    import torch.distributed as torch_dist
    if torch.cuda.is_available():
        return _ORIGINAL_INIT_DIST_PYTORCH(backend, init_backend=init_backend, **kwargs)
    torch_dist.init_process_group(backend=backend, **kwargs)


def _init_dist_slurm_cpu_aware(backend, port=None, init_backend='torch', **kwargs):
    import os
    import subprocess
    import torch.distributed as torch_dist
    if torch.cuda.is_available():
        return _ORIGINAL_INIT_DIST_SLURM(backend, port=port, init_backend=init_backend, **kwargs)
    proc_id = int(os.environ['SLURM_PROCID'])
    node_list = os.environ['SLURM_NODELIST']
    addr = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
    os.environ.setdefault('MASTER_PORT', str(port or 29500))
    os.environ.setdefault('MASTER_ADDR', addr)
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    os.environ['RANK'] = str(proc_id)
    torch_dist.init_process_group(backend=backend, **kwargs)


import mmengine.dist.utils as _mmengine_dist_utils  # noqa: E402

_ORIGINAL_INIT_DIST_PYTORCH = _mmengine_dist_utils._init_dist_pytorch
_ORIGINAL_INIT_DIST_SLURM = _mmengine_dist_utils._init_dist_slurm


def enable_cpu_distributed() -> None:
    """Let mmengine's ``init_dist`` run on machines without CUDA (no effect where CUDA exists)."""
    _mmengine_dist_utils._init_dist_pytorch = _init_dist_pytorch_cpu_aware
    _mmengine_dist_utils._init_dist_slurm = _init_dist_slurm_cpu_aware
