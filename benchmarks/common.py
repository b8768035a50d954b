"""What the benchmark scripts share: the allocator policy and FSLA backward switch they set, and (re-exported
from boat_mm, one implementation each) the timer, peak memory, the machine line and the table writer."""
import os
from contextlib import contextmanager

from boat_mm.analysis.benchmark import peak_memory_mb
from boat_mm.analysis.timing import median_seconds
from boat_mm.utils.machine import cpu_description, machine_description
from boat_mm.utils.setup_env import retain_freed_memory
from boat_mm.utils.tables import markdown_table

__all__ = ['median_seconds', 'peak_memory_mb', 'cpu_description', 'machine_description', 'markdown_table',
           'configure_allocator', 'cluster_backward']


def configure_allocator(device: str, malloc_defaults: bool = False) -> str:
    """CPU runs use the allocator policy of ``tools/train.py`` (``boat_mm.utils.setup_env``: freed memory is
    kept for reuse) unless ``malloc_defaults``; returns a description for the table header."""
    if device != 'cpu':
        return 'CUDA caching allocator'
    if malloc_defaults:
        return 'glibc malloc defaults'
    return retain_freed_memory() or 'malloc defaults (no glibc tuning available)'


@contextmanager
def cluster_backward(variant: str):
    """Within the context, FSLA trains with the backward ``variant`` (``BOAT_MM_CLUSTER_BACKWARD``:
    'autograd' = autograd's backward of the gathers, before issue 22; 'gather' = the gather-free one)."""
    from boat_mm.models.layers.feature_space_attention import CLUSTER_BACKWARD_ENV
    previous = os.environ.get(CLUSTER_BACKWARD_ENV)
    os.environ[CLUSTER_BACKWARD_ENV] = variant
    try:
        yield
    finally:
        if previous is None:
            del os.environ[CLUSTER_BACKWARD_ENV]
        else:
            os.environ[CLUSTER_BACKWARD_ENV] = previous
