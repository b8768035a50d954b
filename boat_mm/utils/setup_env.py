"""The process environment boat_mm sets up: on/off switches read from the environment, freed CPU memory
kept for reuse, and mmengine's distributed start-up on machines without CUDA.

Switches (``switched_on``) default to on: ``BOAT_MM_NATIVE`` (the fused CPU clustering kernel) and
``BOAT_MM_RETAIN_FREED_MEMORY`` (below) are turned off with 0 / false / no / off.

Freed memory (``retain_freed_memory``): keep freed CPU memory in the process (glibc malloc tuning) so big
tensors do not page-fault anew on every forward pass.

Why: glibc serves allocations above its mmap threshold (dynamic, at most 32 MiB) with fresh ``mmap``
pages and gives memory above its trim threshold back to the OS on ``free``. A CPU forward pass of a
dense-prediction backbone allocates and frees tensors of tens to hundreds of MiB every layer, so each
one is faulted in again, page by page. Measured on the 2-core development machine (FSLA, C=96,
3 heads, batch 2, torch clustering): at N=50176 tokens the module took 4.0 us per token with glibc's
defaults and 2.5 us with freed memory kept; at N=3136 (tensors small enough for the heap) 2.0 us either
way. This is the same policy as PyTorch's CUDA caching allocator, and what the PyTorch CPU tuning
guide gets with jemalloc/tcmalloc; here it needs no preloaded library.

The cost: memory freed after a peak stays with the process (it is reused by later allocations, not
returned to the OS). ``tools/train.py`` and ``tools/test.py`` apply it on CPU-only machines; set
``BOAT_MM_RETAIN_FREED_MEMORY=0`` to keep glibc's defaults.

CPU distributed training (``enable_cpu_distributed``): see the section at the end.
"""
import ctypes
import ctypes.util
import os
import platform
import subprocess
from typing import Optional

import torch

__all__ = ['switched_on', 'OFF_VALUES', 'retain_freed_memory', 'retention_requested', 'RETAIN_ENV',
           'enable_cpu_distributed']

OFF_VALUES = ('0', 'false', 'no', 'off')

RETAIN_ENV = 'BOAT_MM_RETAIN_FREED_MEMORY'
# mallopt parameter numbers (glibc <malloc.h>).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
# Blocks up to 1 GiB come from the heap and freed heap memory is kept up to 1 GiB above the top: larger
# single tensors still get their own mapping, so one giant temporary cannot pin memory for ever.
RETAINED_BYTES = 1 << 30

_applied: Optional[str] = None


def switched_on(name: str) -> bool:
    """True unless the variable is set to 0 / false / no / off (any case): these switches default to on."""
    return os.environ.get(name, '1').strip().lower() not in OFF_VALUES


def retention_requested() -> bool:
    """False when the user opted out with ``BOAT_MM_RETAIN_FREED_MEMORY=0`` (or ``false``/``no``/``off``)."""
    return switched_on(RETAIN_ENV)


def _glibc_mallopt():
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def retain_freed_memory() -> Optional[str]:
    """Tune glibc malloc to keep freed memory for reuse (see the module docstring); idempotent.

    Returns a one-line description of what was set, or None when nothing was done: not glibc, the
    user opted out, or glibc refused the settings."""
    global _applied
    if _applied is not None or not retention_requested():
        return _applied
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return None
    # The mmap threshold first: setting any threshold switches off glibc's dynamic one, and a trim
    # threshold alone would leave every block above 128 KiB mmapped (far slower than the default).
    if mallopt(M_MMAP_THRESHOLD, RETAINED_BYTES) == 1:
        how = f'mmap threshold {RETAINED_BYTES >> 20} MiB'
    elif mallopt(M_MMAP_MAX, 0) == 1:  # glibc versions that cap the mmap threshold at 32 MiB
        how = 'no mmapped blocks'
    else:
        return None
    if mallopt(M_TRIM_THRESHOLD, RETAINED_BYTES) == 1:
        _applied = f'glibc malloc keeps freed memory for reuse ({how}, trim threshold {RETAINED_BYTES >> 20} MiB)'
    return _applied


# --- CPU distributed training ------------------------------------------------------------------
# mmengine 0.10.7 assumes a GPU per process: ``_init_dist_pytorch`` calls ``torch.cuda.set_device``
# unconditionally, ``_init_dist_slurm`` divides by ``torch.cuda.device_count()``, and the Runner passes
# ``device_ids=[LOCAL_RANK]`` to DDP. Users debug on laptops and our CI has no GPU, so on a machine
# without CUDA we initialise the process group directly (gloo) and wrap without device ids
# (see ``boat_mm.engine.runner_setup.adapt_cfg_to_device``).

def _init_dist_pytorch_cpu_aware(backend, init_backend='torch', **kwargs):
    import torch.distributed as torch_dist
    if torch.cuda.is_available():
        return _ORIGINAL_INIT_DIST_PYTORCH(backend, init_backend=init_backend, **kwargs)
    torch_dist.init_process_group(backend=backend, **kwargs)


def _init_dist_slurm_cpu_aware(backend, port=None, init_backend='torch', **kwargs):
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


_ORIGINAL_INIT_DIST_PYTORCH = _ORIGINAL_INIT_DIST_SLURM = None


def enable_cpu_distributed() -> None:
    """Let mmengine's ``init_dist`` run on machines without CUDA (no effect where CUDA exists); idempotent."""
    global _ORIGINAL_INIT_DIST_PYTORCH, _ORIGINAL_INIT_DIST_SLURM
    import mmengine.dist.utils as mmengine_dist_utils
    if _ORIGINAL_INIT_DIST_PYTORCH is None:
        _ORIGINAL_INIT_DIST_PYTORCH = mmengine_dist_utils._init_dist_pytorch
        _ORIGINAL_INIT_DIST_SLURM = mmengine_dist_utils._init_dist_slurm
    mmengine_dist_utils._init_dist_pytorch = _init_dist_pytorch_cpu_aware
    mmengine_dist_utils._init_dist_slurm = _init_dist_slurm_cpu_aware
