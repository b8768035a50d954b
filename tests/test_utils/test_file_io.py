"""The one atomic write: the file appears complete under its name or not at all."""
import os

import pytest

from boat_mm.utils.file_io import atomic_path, write_atomically


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    target = tmp_path / 'out.bin'

    def fails(f):
        f.write(b'half')
        raise RuntimeError('killed mid-write')
    with pytest.raises(RuntimeError):
        write_atomically(str(target), fails)
    assert os.listdir(tmp_path) == []


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / 'out.txt'
    target.write_text('old')
    with pytest.raises(RuntimeError):
        with atomic_path(str(target)) as tmp:
            open(tmp, 'w').write('new, half')
            raise RuntimeError
    assert target.read_text() == 'old' and os.listdir(tmp_path) == ['out.txt']


def test_rename_to_names_the_file_by_its_content(tmp_path):
    target = tmp_path / 'model.pth'
    write_atomically(str(target), lambda f: f.write(b'abc'), rename_to=lambda tmp: str(tmp_path / 'model-3.pth'))
    assert os.listdir(tmp_path) == ['model-3.pth'] and (tmp_path / 'model-3.pth').read_bytes() == b'abc'
