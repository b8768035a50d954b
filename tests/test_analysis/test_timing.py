"""The timer: never fewer than min_runs measured runs, at least min_seconds of them, after the warm-up."""
import time

from boat_mm.analysis.timing import median_seconds


def test_runs_at_least_min_runs_after_warmup():
    calls = []
    median_seconds(lambda: calls.append(1), min_runs=7, warmup=2)
    assert len(calls) >= 9


def test_median_of_a_sleep():
    seconds = median_seconds(lambda: time.sleep(0.02), min_runs=3)
    assert 0.018 < seconds < 0.2


def test_fills_min_seconds():
    calls = []
    start = time.perf_counter()
    median_seconds(lambda: calls.append(time.sleep(0.01)), min_runs=1, warmup=0, min_seconds=0.2)
    assert time.perf_counter() - start >= 0.2 and len(calls) >= 10
