"""boat_mm/compat.py: safe checkpoint loading (mmengine checkpoints round trip and resume under torch's
weights_only loading; pickle payloads refused on every load path; damaged files named)."""
import pickle
import random
import re

import pytest
import torch
from conftest import TINY_ARCHS, OsSystemPayload, tiny_backbone
from mmengine.runner import load_checkpoint

import boat_mm  # noqa: F401  (applies the compat fixes)
from boat_mm import BOATCSWinTransformer, BOATSwinTransformer
from boat_mm.apis.checkpoint_conversion import convert_checkpoint
from boat_mm.utils.checkpoint import LOADS_WEIGHTS_ONLY_BY_DEFAULT, DamagedCheckpointError

# torch.load's own default before torch 2.6 is weights_only=False: plain torch.load and mmengine's loader then
# unpickle anything, as they always did; boat_mm does not patch them there (its own loads stay safe: see the
# restricted-unpickler tests below).
OLD_TORCH_LOADS_PICKLES = pytest.mark.skipif(not LOADS_WEIGHTS_ONLY_BY_DEFAULT,
                                             reason='torch < 2.6: torch.load and mmengine load with weights_only=False')


class _GetattrGadget:
    """Pickles to getattr(numpy.ndarray, 'tofile'), the usual first step of a gadget chain."""

    def __reduce__(self):
        import numpy as np
        return getattr, (np.ndarray, 'tofile')


def _tiny_runner(work_dir, max_iters, resume=False, load_from=None):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class TinyModel(BaseModel):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)

        def forward(self, inputs, targets, mode='tensor'):
            out = self.linear(torch.stack(inputs))
            if mode == 'loss':
                return dict(loss=((out - torch.stack(targets)) ** 2).mean())
            return out

    class TinyData(torch.utils.data.Dataset):
        metainfo = dict(classes=('a', 'b'))

        def __len__(self):
            return 8

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return dict(inputs=torch.randn(2, generator=g), targets=torch.randn(1, generator=g))

    return Runner(
        model=TinyModel(), work_dir=str(work_dir), experiment_name=f'tiny{max_iters}{resume}',
        train_dataloader=dict(dataset=TinyData(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=2)],
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=1000),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0), resume=resume, load_from=load_from, default_scope=None)


def test_mmengine_checkpoint_round_trip_and_resume(tmp_path):
    from mmengine.runner import load_checkpoint
    runner = _tiny_runner(tmp_path, max_iters=4)
    runner.train()
    ckpt = tmp_path / 'iter_2.pth'
    assert ckpt.exists()
    # Plain load (the weights_only default of torch >= 2.6) and mmengine's loader both work.
    raw = torch.load(str(ckpt))
    assert 'message_hub' in raw and raw['meta']['iter'] == 2
    model = runner.model
    load_checkpoint(model, str(ckpt))
    # Resume continues from iteration 2 to 4 with the saved optimizer state.
    resumed = _tiny_runner(tmp_path, max_iters=4, resume=True, load_from=str(ckpt))
    resumed.train()
    assert resumed.iter == 4
    final_a = torch.load(str(tmp_path / 'iter_4.pth'))['state_dict']
    assert all(torch.isfinite(v).all() for v in final_a.values())


@pytest.mark.parametrize('payload_kind', ['reduce', 'getattr'])
@OLD_TORCH_LOADS_PICKLES
def test_checkpoint_with_pickle_payload_is_refused(tmp_path, payload_kind):
    from mmengine.runner import load_checkpoint
    marker = tmp_path / 'payload_ran'
    payload = OsSystemPayload(marker) if payload_kind == 'reduce' else _GetattrGadget()
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'linear.weight': torch.zeros(1, 2)}, 'meta': payload}, str(path))
    model = torch.nn.Module()
    model.linear = torch.nn.Linear(2, 1)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(model, str(path))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(str(path))
    assert not marker.exists()


def _numpy_arrays_of_every_dtype_and_shape():
    """Every numpy dtype but object (whose items are arbitrary pickles), each empty, 0-d, 2-d and Fortran-ordered."""
    import numpy as np
    dtypes = sorted({np.dtype(t) for t in set(np.sctypeDict.values()) if t.__module__ == 'numpy'} - {np.dtype(object)},
                    key=str)  # (sctypeDict also lists types other packages register, e.g. ml_dtypes, imported by onnx)
    dtypes += [np.dtype('U7'), np.dtype('S5'), np.dtype('datetime64[s]'), np.dtype('timedelta64[ms]'),
               np.dtype([('a', '<f4'), ('b', '<i8', (2,))])]
    arrays = []
    for dtype in dtypes:
        for shape in ((), (0,), (0, 3), (2, 3)):
            arrays.append(np.zeros(shape, dtype=dtype))
        arrays.append(np.asfortranarray(np.ones((3, 2), dtype=dtype)))
        arrays.append(np.zeros((), dtype=dtype)[()])  # a numpy scalar
    return arrays


def test_numpy_arrays_of_every_dtype_and_shape_load(tmp_path):
    """An mmengine checkpoint may hold empty numpy arrays (a HistoryBuffer never updated) and any dtype."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    from mmengine.runner import CheckpointLoader
    arrays = _numpy_arrays_of_every_dtype_and_shape()
    path = tmp_path / 'numpy.pth'
    torch.save({'state_dict': {}, 'message_hub': {'log_scalars': {'never_updated': HistoryBuffer()}},
                'arrays': arrays}, str(path))
    for loaded in (torch.load(str(path)), CheckpointLoader.load_checkpoint(str(path))):
        assert len(loaded['arrays']) == len(arrays)
        for saved, back in zip(arrays, loaded['arrays']):
            # (the scalar class may come back as another alias of the same dtype, e.g. int64 for longlong)
            assert isinstance(back, np.ndarray) == isinstance(saved, np.ndarray) and back.dtype == saved.dtype
            assert np.shape(back) == np.shape(saved) and np.array_equal(back, saved)
        assert len(loaded['message_hub']['log_scalars']['never_updated'].data[0]) == 0


class _BytesCall:
    """Pickles to builtins.bytes(10): only the no-argument call (an empty payload) is allowed."""

    def __reduce__(self):
        return bytes, (10,)


@OLD_TORCH_LOADS_PICKLES
def test_bytes_with_arguments_stays_refused(tmp_path):
    path = tmp_path / 'bytes.pth'
    torch.save({'state_dict': {}, 'meta': _BytesCall()}, str(path))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(str(path))


# --- checkpoints --------------------------------------------------------------------------------

@pytest.fixture
def saved_backbone(tmp_path):
    model = tiny_backbone(BOATSwinTransformer).eval()
    path = tmp_path / 'good.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in model.state_dict().items()}}, str(path))
    return model, path


def _all_load_paths(path):
    """Every way a checkpoint enters boat_mm: mmengine load_checkpoint, init_cfg Pretrained, converter."""
    target = tiny_backbone(BOATSwinTransformer).eval()
    if LOADS_WEIGHTS_ONLY_BY_DEFAULT:  # before torch 2.6 mmengine's own loader is left as mmengine made it
        yield 'load_checkpoint', lambda: load_checkpoint(target, str(path))
    pretrained = BOATSwinTransformer(arch=TINY_ARCHS[BOATSwinTransformer],
                                     init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    yield 'init_cfg', pretrained.init_weights
    yield 'converter', lambda: convert_checkpoint(str(path), str(path) + '.out')


# Random bytes read as pickle opcodes fail in many different ways (unknown opcode, KeyError, IndexError,
# truncation...): a fixed set of seeds makes every run meet the same ones, and enough of them to meet several.
GARBAGE_SEEDS = range(12)


# BINGET of a memo slot never filled: torch's unpickler raises a bare KeyError (what CI once drew at random).
MEMO_MISS = b'h\xc5'


@pytest.mark.parametrize('damage', ['truncated', 'memo-miss', *[f'garbage{seed}' for seed in GARBAGE_SEEDS]])
def test_damaged_checkpoint_names_the_file(saved_backbone, damage):
    _, path = saved_backbone
    data = path.read_bytes()
    if damage == 'truncated':
        path.write_bytes(data[:len(data) // 2])
    elif damage == 'memo-miss':
        path.write_bytes(MEMO_MISS + data[len(MEMO_MISS):])
    else:
        path.write_bytes(random.Random(int(damage[len('garbage'):])).randbytes(len(data)))
    for name, load in _all_load_paths(path):
        with pytest.raises(DamagedCheckpointError, match=rf'{re.escape(str(path))}: the file is damaged'):
            load()


def test_pickle_payload_refused_on_every_path(tmp_path):
    marker = tmp_path / 'payload_ran'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'backbone.norm3.weight': torch.ones(1)}, 'meta': OsSystemPayload(marker)}, str(path))
    for name, load in _all_load_paths(path):
        with pytest.raises(pickle.UnpicklingError, match=rf'refused to load {re.escape(str(path))}'):
            load()
    assert not marker.exists()


def test_checkpoint_of_another_arch_reports_missing_and_unexpected_keys(saved_backbone, tmp_path):
    _, path = saved_backbone
    other = BOATCSWinTransformer(arch=TINY_ARCHS[BOATCSWinTransformer])
    with pytest.raises(RuntimeError) as error:
        load_checkpoint(other, str(path), strict=True, revise_keys=[(r'^backbone\.', '')])
    message = str(error.value)
    assert 'unexpected key in source state_dict: ' in message and 'missing keys in source state_dict: ' in message


# --- the allow-list on a torch without safe_globals (before 2.5): a restricted unpickler --------------------

def _restricted_load(path, extra_globals=()):
    from boat_mm.utils.checkpoint import MMENGINE_CHECKPOINT_GLOBALS, _global_name, _restricted_pickle_module
    allowed = dict(_global_name(entry) for entry in [*MMENGINE_CHECKPOINT_GLOBALS, *extra_globals])
    return torch.load(path, map_location='cpu', weights_only=False, pickle_module=_restricted_pickle_module(allowed))


def test_restricted_unpickler_loads_what_the_allow_list_allows(tmp_path):
    """What boat_mm's own loads use on torch < 2.5; tested on every torch (the unpickler is plain Python)."""
    import argparse

    from boat_mm.models.utils.ckpt_convert import RELEASED_CHECKPOINT_EXTRA_GLOBALS
    runner = _tiny_runner(tmp_path, max_iters=2)
    runner.train()
    mmengine_checkpoint = _restricted_load(tmp_path / 'iter_2.pth')  # HistoryBuffer, numpy scalars and arrays
    assert 'message_hub' in mmengine_checkpoint and mmengine_checkpoint['meta']['iter'] == 2
    state = tiny_backbone(BOATSwinTransformer).state_dict()
    released = tmp_path / 'released.pth'
    torch.save({'model': state, 'args': argparse.Namespace(lr=1.0), 'epoch': 3}, released)
    loaded = _restricted_load(released, RELEASED_CHECKPOINT_EXTRA_GLOBALS)
    assert loaded['args'].lr == 1.0 and all(torch.equal(loaded['model'][k], v) for k, v in state.items())
    with pytest.raises(pickle.UnpicklingError, match='argparse.Namespace'):  # not allowed without the extras
        _restricted_load(released)


@pytest.mark.parametrize('payload', [OsSystemPayload, _GetattrGadget], ids=['os.system', 'getattr-gadget'])
def test_restricted_unpickler_refuses_payloads_without_running_them(tmp_path, payload):
    marker = tmp_path / 'ran'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': payload(marker) if payload is OsSystemPayload else payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        _restricted_load(path)
    assert not marker.exists()


def test_feature_gates_give_one_line_naming_the_torch_they_need(monkeypatch):
    from boat_mm.utils import torch_features
    monkeypatch.setattr(torch_features, 'TORCH_VERSION', (2, 1))
    with pytest.raises(torch_features.TorchTooOldError) as error:
        torch_features.require_torch(torch_features.ONNX_EXPORT)
    message = str(error.value)
    assert '\n' not in message and 'needs torch >= 2.5' in message and torch.__version__ in message
    from boat_mm.apis.deployment import export_onnx
    with pytest.raises(torch_features.TorchTooOldError, match='needs torch >= 2.5'):  # before onnx is imported
        export_onnx(torch.nn.Identity(), torch.zeros(1), 'never.onnx', ['out'])


def test_mmengine_loads_are_patched_only_where_torch_loads_weights_only_by_default():
    from mmengine.runner.checkpoint import CheckpointLoader

    from boat_mm.utils.checkpoint import LOADS_WEIGHTS_ONLY_BY_DEFAULT, load_checkpoint_file
    local_loader = CheckpointLoader._schemes['']
    assert (local_loader is load_checkpoint_file) == LOADS_WEIGHTS_ONLY_BY_DEFAULT
