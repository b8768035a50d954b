"""Window size change on load (issue 33): window-7 weights into a window-12 BOAT-Swin (fine-tuning at 384)."""
import logging
from contextlib import contextmanager

import numpy as np
import torch
from conftest import TINY_ARCHS, tiny_backbone
from mmengine.logging import MMLogger

from boat_mm import BOATSwinTransformer

TABLE = 'stages.1.blocks.0.attn.relative_position_bias_table'
CUBIC_A = -0.75  # the cubic convolution kernel's parameter in PyTorch's (and OpenCV's) bicubic


def _cubic(t):
    """Weights of the 4 taps at offsets -1, 0, 1, 2 for a fractional position t (Keys' cubic convolution)."""
    def near(x):
        return ((CUBIC_A + 2) * x - (CUBIC_A + 3)) * x * x + 1

    def far(x):
        return ((CUBIC_A * x - 5 * CUBIC_A) * x + 8 * CUBIC_A) * x - 4 * CUBIC_A
    return np.array([far(t + 1), near(t), near(1 - t), far(2 - t)])


def _bicubic_1d(values, size):
    """values (..., n) resampled to (..., size): half-pixel centres, taps clamped at the borders."""
    n = values.shape[-1]
    out = np.empty(values.shape[:-1] + (size,))
    for i in range(size):
        x = (i + 0.5) * n / size - 0.5
        x0 = int(np.floor(x))
        taps = [min(max(x0 + k, 0), n - 1) for k in (-1, 0, 1, 2)]
        out[..., i] = values[..., taps] @ _cubic(x - x0)
    return out


def independent_bicubic(table, window):
    """A relative position table (rows, heads) resized for ``window`` in numpy, rows then columns."""
    side_in = int(round(table.shape[0] ** 0.5))
    side = 2 * window - 1
    grid = table.double().numpy().T.reshape(-1, side_in, side_in)
    grid = _bicubic_1d(_bicubic_1d(grid, side).swapaxes(1, 2), side).swapaxes(1, 2)
    return torch.from_numpy(grid.reshape(-1, side * side).T.copy())


@contextmanager
def _log_lines():
    """What the backbone logs (``print_log(logger='current')``) inside the context."""
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def _checkpoint(tmp_path, model):
    path = tmp_path / 'window7.pth'
    torch.save(dict(state_dict=model.state_dict()), str(path))
    return str(path)


def _loaded(path, window):
    torch.manual_seed(1)
    model = BOATSwinTransformer(arch=TINY_ARCHS[BOATSwinTransformer], window_size=window,
                                init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    return model


def test_window7_checkpoint_loads_into_window12_resized_bicubically(tmp_path):
    source = tiny_backbone(BOATSwinTransformer)
    path = _checkpoint(tmp_path, source)
    with _log_lines() as lines:
        model = _loaded(path, 12)
    log = '\n'.join(lines)
    assert 'parameters not in the checkpoint keep their fresh initialisation: none' in log  # no missing key
    tables = sum(1 for k in model.state_dict() if k.endswith('relative_position_bias_table'))
    assert f'resized {tables} relative_position_bias_table tensors from window 7 to window 12 (bicubic)' in log
    loaded = model.state_dict()
    original = source.state_dict()
    assert loaded[TABLE].shape == (23 * 23, original[TABLE].shape[1])
    torch.testing.assert_close(loaded[TABLE].double(), independent_bicubic(original[TABLE], 12), rtol=0, atol=1e-6)
    for key, value in original.items():  # everything else as it was
        if not key.endswith('relative_position_bias_table'):
            assert torch.equal(loaded[key], value), key
    out = model(torch.randn(1, 3, 96, 96))  # the index buffers belong to window 12
    assert all(torch.isfinite(o).all() for o in out)


def test_same_window_load_is_exact(tmp_path):
    source = tiny_backbone(BOATSwinTransformer)
    with _log_lines() as lines:
        model = _loaded(_checkpoint(tmp_path, source), 7)
    assert any('loaded' in line for line in lines) and not any('resized' in line for line in lines)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
