"""The fused CPU clustering kernel (``csrc/hierarchical_clustering.cpp``): built on first use, cached.

The kernel is plain C++ (no torch headers), so it compiles in seconds with the system ``g++`` and is
called through ctypes. It is built once per source version, compiler and CPU into
``$BOAT_MM_CACHE`` (default ``~/.cache/boat_mm``)``/native/``, published by an atomic rename, so
concurrent processes (``dist_train.sh``) never see half a library. Where it cannot be built (no
compiler, not Linux/macOS) or ``BOAT_MM_NATIVE=0`` is set, FSLA uses its torch implementation, which
computes the same clusters (on GPU it always does).
"""
import ctypes
import hashlib
import os
import os.path as osp
import platform
import shutil
import subprocess
import sys
import warnings
from typing import Optional

import torch

from ...utils.file_io import atomic_path
from ...utils.setup_env import switched_on
from .transformer_layers import is_tracing

__all__ = ['native_clustering_available', 'cluster_native', 'compile_flags', 'NATIVE_ENV', 'MARCH_ENV']

NATIVE_ENV = 'BOAT_MM_NATIVE'
SOURCE = osp.join(osp.dirname(osp.abspath(__file__)), 'csrc', 'hierarchical_clustering.cpp')
# The kernel is built for the CPU it runs on; BOAT_MM_NATIVE_MARCH names another target (e.g. x86-64-v2 for
# SSE4.2 only, x86-64-v3 for AVX2, x86-64-v4 for AVX-512) to build it as a different x86-64 CPU would.
MARCH_ENV = 'BOAT_MM_NATIVE_MARCH'
DEFAULT_MARCH = 'native'
COMMON_FLAGS = ('-O3', '-std=c++17', '-shared', '-fPIC', '-fopenmp')
_COMPILE_TIMEOUT_S = 300

_library = None
_load_failed = False


def compile_flags() -> tuple:
    """The compiler flags of the kernel: ``-march`` from ``BOAT_MM_NATIVE_MARCH`` (default: this CPU)."""
    return (f'-march={os.environ.get(MARCH_ENV) or DEFAULT_MARCH}', *COMMON_FLAGS)


def _cpu_identity() -> str:
    """What -march=native depends on: the CPU model and flags (a shared home directory may be used by
    machines with different CPUs)."""
    try:
        with open('/proc/cpuinfo') as f:
            lines = [line for line in f if line.startswith(('model name', 'flags'))][:2]
        return ''.join(lines)
    except OSError:
        return platform.processor() or platform.machine()


def _library_path(compiler: str) -> str:
    version = subprocess.run([compiler, '--version'], capture_output=True, text=True).stdout
    digest = hashlib.sha256()
    for part in (open(SOURCE, 'rb').read(), version.encode(), ' '.join(compile_flags()).encode(),
                 _cpu_identity().encode()):
        digest.update(part)
    cache = os.environ.get('BOAT_MM_CACHE', osp.join(osp.expanduser('~'), '.cache', 'boat_mm'))
    return osp.join(cache, 'native', f'hierarchical_clustering-{digest.hexdigest()[:16]}.so')


def _build(compiler: str, target: str) -> None:
    """Compile the kernel into ``target`` (atomically: concurrent processes never load a partial library)."""
    print(f'[boat_mm] compiling the clustering kernel (once per CPU and compiler) into {target}', file=sys.stderr,
          flush=True)
    with atomic_path(target) as partial:
        result = subprocess.run([compiler, *compile_flags(), SOURCE, '-o', partial], capture_output=True,
                                text=True, timeout=_COMPILE_TIMEOUT_S)
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-2000:])


def _load():
    global _library, _load_failed
    if _library is not None or _load_failed:
        return _library
    compiler = os.environ.get('CXX') or shutil.which('g++') or shutil.which('c++')
    if compiler is None or platform.system() not in ('Linux', 'Darwin'):
        _load_failed = True
        return None
    try:
        target = _library_path(compiler)
        if not osp.exists(target):
            _build(compiler, target)
        library = ctypes.CDLL(target)
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        warnings.warn(f'boat_mm: the fused CPU clustering kernel could not be built ({error}); FSLA uses '
                      f'its torch implementation (same clusters, slower). Set {NATIVE_ENV}=0 to silence.')
        _load_failed = True
        return None
    pointer, i64, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    for name in ('boat_cluster_f32', 'boat_cluster_f64'):
        function = getattr(library, name)
        function.argtypes = [pointer, i64, i64, i64, i64, i64, i64, i64, f64, f64, pointer, pointer, i64]
        function.restype = ctypes.c_int
    _library = library
    return _library


def native_clustering_available(q: torch.Tensor) -> bool:
    """True when ``q`` can be clustered by the fused kernel: a CPU float32/float64 tensor, not traced,
    the kernel enabled and buildable.

    A traced graph cannot hold the ctypes call (its tensors have no real memory, and a trace would freeze
    the kernel's output as a constant), so tracing always takes the torch clustering: the graph stays
    whole (no break), portable (ONNX, other runtimes) and free of host syncs."""
    if q.device.type != 'cpu' or q.dtype not in (torch.float32, torch.float64) or is_tracing():
        return False
    return switched_on(NATIVE_ENV) and _load() is not None


def cluster_native(q: torch.Tensor, num_levels: int, num_pads: int, overlap: int, kmeans_iters: int,
                   temperature: float, eps: float) -> Optional[torch.Tensor]:
    """Cluster q (rows, slots, d), already padded to the plan's slots (pads at the end); returns perm
    (rows, slots): the same clusters as ``balanced_hierarchical_clustering``'s torch implementation,
    with each leaf's ``overlap`` tokens nearest the split point where the plan's key_index takes them
    (the rest of a leaf unordered). Returns None where the kernel cannot run (see
    ``native_clustering_available``). q is not modified."""
    if not native_clustering_available(q):
        return None
    library = _load()
    rows, slots, dims = q.shape
    work = torch.empty(rows, slots, dims, dtype=q.dtype).copy_(q.detach())  # reordered in place
    inv_norm = torch.empty(rows, slots, dtype=q.dtype)
    perm = torch.empty(rows, slots, dtype=torch.int64)
    function = library.boat_cluster_f32 if q.dtype == torch.float32 else library.boat_cluster_f64
    status = function(work.data_ptr(), rows, slots, dims, num_levels, num_pads, kmeans_iters, overlap,
                      float(temperature), float(eps), inv_norm.data_ptr(), perm.data_ptr(),
                      torch.get_num_threads())
    if status != 0:
        raise ValueError(f'clustering kernel rejected its arguments (code {status}): q {tuple(q.shape)}, '
                         f'levels {num_levels}, pads {num_pads}')
    return perm
