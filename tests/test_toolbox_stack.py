"""The stack boat_mm stands on: mmcv ops built with CPU kernels, stock mmdet / mmseg models training on CPU."""

import torch
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
