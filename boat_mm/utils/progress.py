"""Progress lines of the long tools (ONNX export, benchmarks, FLOP counts, run comparison): one line when a
phase starts and one with its time when it ends, on stderr, so that stdout keeps only the results (tables,
numbers) and a user watching a minutes-long tool sees what it is doing."""
import sys
import time
from contextlib import contextmanager
from typing import Iterator

__all__ = ['phase', 'note']


def note(message: str, tool: str = 'boat_mm') -> None:
    """One progress line: ``[tool] message``."""
    print(f'[{tool}] {message}', file=sys.stderr, flush=True)


@contextmanager
def phase(what: str, tool: str = 'boat_mm') -> Iterator[None]:
    """``[tool] what ...`` now, ``[tool] what: N.N s`` when the block ends (``failed after`` if it raised)."""
    note(f'{what} ...', tool)
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        note(f'{what}: failed after {time.perf_counter() - start:.1f} s', tool)
        raise
    note(f'{what}: {time.perf_counter() - start:.1f} s', tool)
