"""The timer for one model or one call: ``torch.utils.benchmark.Timer``, which synchronises CUDA around
each measurement and keeps the thread count it is given.

Runs are never fewer than ``min_runs`` (a median of one is no median) and fill at least ``min_seconds``
(short calls are noisy on a shared machine: more of them steady the median). The first call, timed apart,
is the warm-up (first-call allocation, kernel selection) and sizes the measurement.
"""
import statistics
import time
from typing import Callable, List

import torch

__all__ = ['median_seconds', 'DEFAULT_MIN_RUNS']

DEFAULT_MIN_RUNS = 5


def median_seconds(fn: Callable[[], object], min_runs: int = DEFAULT_MIN_RUNS, warmup: int = 1,
                   min_seconds: float = 0.0) -> float:
    """Median wall time of ``fn()`` in seconds (see the module docstring)."""
    from torch.utils.benchmark import Timer
    first = 0.0
    for _ in range(warmup):
        start = time.perf_counter()
        fn()
        first = time.perf_counter() - start
    timer = Timer(stmt='fn()', globals=dict(fn=fn), num_threads=torch.get_num_threads())
    times: List[float] = []
    while len(times) < min_runs or sum(times) < min_seconds:
        wanted = max(min_seconds - sum(times), (min_runs - len(times)) * first)
        times.extend(timer.blocked_autorange(min_run_time=wanted).times)
    return statistics.median(times)
