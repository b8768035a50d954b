"""Keep freed CPU memory in the process (glibc malloc tuning) so big tensors do not page-fault anew
on every forward pass.

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
"""
import ctypes
import ctypes.util
import platform
from typing import Optional

from .env import switched_on

__all__ = ['retain_freed_memory', 'retention_requested', 'RETAIN_ENV']

RETAIN_ENV = 'BOAT_MM_RETAIN_FREED_MEMORY'
# mallopt parameter numbers (glibc <malloc.h>).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
# Blocks up to 1 GiB come from the heap and freed heap memory is kept up to 1 GiB above the top: larger
# single tensors still get their own mapping, so one giant temporary cannot pin memory for ever.
RETAINED_BYTES = 1 << 30

_applied: Optional[str] = None


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
