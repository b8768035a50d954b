"""What ``--resume`` continues from: the newest complete checkpoint, not only what ``last_checkpoint`` says."""
import os

from boat_mm.engine.runner_setup import latest_checkpoint


def _touch(path, mtime):
    path.write_bytes(b'')
    os.utime(path, (mtime, mtime))


def test_a_checkpoint_newer_than_last_checkpoint_is_the_one_resumed(tmp_path):
    # killed after iter_4.pth was renamed into place, before mmengine rewrote last_checkpoint
    _touch(tmp_path / 'iter_2.pth', 1000)
    _touch(tmp_path / 'iter_4.pth', 2000)
    _touch(tmp_path / 'best_mIoU_iter_2.pth', 3000)  # a best_* copy is not where the run stopped
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_2.pth'))
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_4.pth')


def test_equal_times_take_the_later_iteration_and_epochs_count_too(tmp_path):
    for name in ('epoch_9.pth', 'epoch_10.pth'):
        _touch(tmp_path / name, 1000)
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_10.pth')


def test_no_regular_checkpoint_falls_back_to_last_checkpoint_or_none(tmp_path):
    assert latest_checkpoint(str(tmp_path)) is None
    assert latest_checkpoint(str(tmp_path / 'never_created')) is None
    elsewhere = tmp_path / 'moved' / 'weights.pth'
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b'')
    (tmp_path / 'last_checkpoint').write_text(str(elsewhere) + '\n')
    assert latest_checkpoint(str(tmp_path)) == str(elsewhere)
    elsewhere.unlink()  # a stale record is no checkpoint
    assert latest_checkpoint(str(tmp_path)) is None
