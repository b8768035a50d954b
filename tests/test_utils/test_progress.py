"""Progress lines go to stderr (stdout keeps the results) and say how long each phase took, or that it failed."""
import pytest

from boat_mm.utils.progress import phase


def test_phase_lines(capsys):
    with phase('exporting', 'export_onnx'):
        print('result')
    out, err = capsys.readouterr()
    assert out == 'result\n'
    assert err.splitlines()[0] == '[export_onnx] exporting ...'
    assert err.splitlines()[1].startswith('[export_onnx] exporting: ') and err.endswith(' s\n')


def test_a_failed_phase_says_so(capsys):
    with pytest.raises(KeyError):
        with phase('building'):
            raise KeyError
    assert 'building: failed after' in capsys.readouterr().err
