"""The stack boat_mm stands on: mmcv ops, stock toolbox models on CPU, safe checkpoint loading."""
import pickle

import pytest
import torch
from conftest import OsSystemPayload
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope

import boat_mm  # noqa: F401  (applies the compat fixes)


def test_mmcv_ops_run_on_cpu():
    from mmcv.ops import RoIAlign, nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    dets, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    feats = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8)
    rois = torch.tensor([[0., 0., 0., 4., 4.]])
    out = RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=2)(feats, rois)
    assert out.shape == (1, 1, 2, 2) and torch.isfinite(out).all()


def _config(tmp_path, base):
    path = tmp_path / 'cfg.py'
    path.write_text(f'_base_ = {base!r}\n')
    return Config.fromfile(str(path))


def _one_step(model, loss_fn):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = loss_fn()
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    total.backward()
    optimizer.step()
    return total


def test_stock_mmdet_mask_rcnn_trains_one_step_on_cpu(tmp_path):
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    init_default_scope('mmdet')
    cfg = _config(tmp_path, 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')
    cfg.model.backbone.init_cfg = None  # no download at test time
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).train()
    packed = demo_mm_inputs(2, [[3, 128, 128], [3, 96, 128]], num_items=[2, 3], with_mask=True,
                            num_classes=80)
    data = model.data_preprocessor(packed, True)
    total = _one_step(model, lambda: model.loss(data['inputs'], data['data_samples']))
    assert total.item() > 0


def test_stock_mmseg_upernet_trains_one_step_on_cpu(tmp_path):
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    init_default_scope('mmseg')
    cfg = _config(tmp_path, 'mmseg::_base_/models/upernet_r50.py')
    cfg.model.pretrained = None
    cfg.model.data_preprocessor = dict(type='SegDataPreProcessor', size=(64, 64))
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).train()
    inputs = torch.randn(2, 3, 64, 64)
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64), ori_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 19, (1, 64, 64)))
        samples.append(sample)
    total = _one_step(model, lambda: model.loss(inputs, samples))
    assert total.item() > 0


# --- safe checkpoint loading ------------------------------------------------------------------

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


def test_bytes_with_arguments_stays_refused(tmp_path):
    path = tmp_path / 'bytes.pth'
    torch.save({'state_dict': {}, 'meta': _BytesCall()}, str(path))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(str(path))
