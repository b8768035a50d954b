"""The one atomic write of boat_mm: a file appears complete under its name or not at all.

Checkpoints (every local mmengine save, converted and published weights), the compiled clustering kernel
and report files go through ``atomic_path``: written under a temporary name in the same directory, synced,
then renamed, so a job killed mid-write never leaves a half-written file for the next reader.
"""
import os
import os.path as osp
import tempfile
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

__all__ = ['atomic_path', 'write_atomically', 'save_checkpoint_atomic']


@contextmanager
def atomic_path(filename: str, rename_to: Optional[Callable[[str], str]] = None) -> Iterator[str]:
    """A temporary path beside ``filename`` for the block to write; renamed to ``filename`` (or to
    ``rename_to(temporary path)``, for names that depend on the content, such as a hash) when the block
    succeeds, removed when it fails."""
    directory = osp.dirname(osp.abspath(filename))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{osp.basename(filename)}.', suffix='.tmp')
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, rename_to(tmp) if rename_to else filename)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def write_atomically(filename: str, write: Callable, binary: bool = True,
                     rename_to: Optional[Callable[[str], str]] = None) -> None:
    """``write(file)`` into a temporary file beside ``filename``, synced, then renamed into place (see
    ``atomic_path`` for ``rename_to``)."""
    with atomic_path(filename, rename_to) as tmp:
        with open(tmp, 'wb' if binary else 'w') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())


def save_checkpoint_atomic(checkpoint, filename: str) -> None:
    """``torch.save`` through ``write_atomically``: a job killed mid-save leaves no half-written checkpoint."""
    import torch
    write_atomically(filename, lambda f: torch.save(checkpoint, f))
