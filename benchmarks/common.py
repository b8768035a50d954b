"""Timing helpers shared by the benchmark scripts (median of repeated runs, peak memory)."""
import gc
import os
import statistics
import time
from contextlib import contextmanager
from typing import Callable

import torch

from boat_mm.cpu_memory import retain_freed_memory
from boat_mm.model_benchmark import peak_memory_mb  # noqa: F401  (one implementation, re-exported)

__all__ = ['time_call', 'peak_memory_mb', 'machine_description', 'markdown_table', 'configure_allocator',
           'cluster_backward']


def time_call(fn: Callable[[], object], repeats: int = 5, warmup: int = 1, device: str = 'cpu',
              min_seconds: float = 0.0) -> float:
    """Median wall time of ``fn()`` in seconds, over ``repeats`` calls or as many as fill ``min_seconds``
    (short calls are noisy on a shared machine: more of them steady the median)."""
    for _ in range(warmup):
        fn()
    times = []
    while len(times) < repeats or sum(times) < min_seconds:
        if device == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    gc.collect()
    return statistics.median(times)


def configure_allocator(device: str, malloc_defaults: bool = False) -> str:
    """CPU runs use the allocator policy of ``tools/train.py`` (``boat_mm.cpu_memory``: freed memory is
    kept for reuse) unless ``malloc_defaults``; returns a description for the table header."""
    if device != 'cpu':
        return 'CUDA caching allocator'
    if malloc_defaults:
        return 'glibc malloc defaults'
    return retain_freed_memory() or 'malloc defaults (no glibc tuning available)'


# CPU flags of native bf16 arithmetic; without them oneDNN emulates bf16 matmuls through fp32, slower than
# fp32 itself, and bf16 tables measure the emulation.
NATIVE_BF16_FLAGS = ('avx512_bf16', 'amx_bf16')


def cpu_description() -> str:
    """CPU model and whether it computes bf16 natively (from /proc/cpuinfo; the architecture elsewhere)."""
    import platform
    try:
        with open('/proc/cpuinfo') as info:
            text = info.read()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(':', 1)[1].strip() for line in text.splitlines() if line.startswith('model name')),
                 platform.machine())
    flags = next((line.split(':', 1)[1].split() for line in text.splitlines() if line.startswith('flags')), [])
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
    return f'{model}, bf16 {"native (" + ", ".join(native) + ")" if native else "emulated (no avx512_bf16/amx_bf16)"}'


@contextmanager
def cluster_backward(variant: str):
    """Within the context, FSLA trains with the backward ``variant`` (``BOAT_MM_CLUSTER_BACKWARD``:
    'autograd' = autograd's backward of the gathers, before issue 22; 'gather' = the gather-free one)."""
    from boat_mm.models.feature_space_attention import CLUSTER_BACKWARD_ENV
    previous = os.environ.get(CLUSTER_BACKWARD_ENV)
    os.environ[CLUSTER_BACKWARD_ENV] = variant
    try:
        yield
    finally:
        if previous is None:
            del os.environ[CLUSTER_BACKWARD_ENV]
        else:
            os.environ[CLUSTER_BACKWARD_ENV] = previous


def machine_description(device: str = 'cpu') -> str:
    if device == 'cuda':
        return f'{torch.cuda.get_device_name()} (torch {torch.__version__})'
    return f'{cpu_description()}, {torch.get_num_threads()} threads (torch {torch.__version__})'



def markdown_table(rows, columns) -> str:
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    for row in rows:
        lines.append('| ' + ' | '.join(str(row[c]) for c in columns) + ' |')
    return '\n'.join(lines)
