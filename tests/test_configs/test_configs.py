"""Every config parses and builds; optimizer settings; swapping BOAT into stock configs trains."""
import glob
import importlib
import os.path as osp

import pytest
import torch
from conftest import REPO
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', '*.py')) + glob.glob(osp.join(REPO, 'configs', 'demo', '*.py')))


def build_model(cfg):
    init_default_scope(cfg.default_scope)
    return importlib.import_module(f'{cfg.default_scope}.registry').MODELS.build(cfg.model)


def test_the_fixed_entry_point_config_exists():
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'upernet_boat_cswin_ade20k.py'))
    assert cfg.model.backbone.type == 'BOATCSWinTransformer' and cfg.model.backbone.arch == 'tiny'
    assert cfg.model.type == 'EncoderDecoder' and cfg.model.decode_head.type == 'UPerHead'
    assert cfg.model.auxiliary_head.type == 'FCNHead'
    assert cfg.crop_size == (512, 512) and cfg.train_dataloader.batch_size == 2
    assert cfg.train_cfg.max_iters == 160000


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.relpath(p, REPO) for p in CONFIGS])
def test_config_parses_and_model_builds(path):
    cfg = Config.fromfile(path)
    # mmdet configs also import the Mask R-CNN TTA model (configs/_base_/mask-rcnn_tta.py)
    imports = ['boat_mm', 'boat_mm.models.test_time_augs.det_tta'] if cfg.default_scope == 'mmdet' else ['boat_mm']
    assert cfg.custom_imports == dict(imports=imports, allow_failed_imports=False)
    assert cfg.default_scope in ('mmpretrain', 'mmdet', 'mmseg')
    if cfg.default_scope == 'mmdet':
        assert cfg.tta_model.type == 'MaskDetTTAModel' and len(cfg.tta_pipeline[-1].transforms[0]) == 3
    model = build_model(cfg)
    assert type(model.backbone).__name__ in ('BOATSwinTransformer', 'BOATCSWinTransformer')
    if cfg.default_scope != 'mmpretrain' and 'demo' not in path:
        init = cfg.model.backbone.init_cfg
        assert init.type == 'Pretrained' and init.prefix == 'backbone.' and init.checkpoint.startswith('checkpoints/')


@pytest.mark.parametrize('name', ['cls_boat_swin_imagenet.py', 'mask-rcnn_boat_swin_coco_1x.py',
                                  'upernet_boat_cswin_ade20k.py'])
def test_no_weight_decay_on_norms_and_position_tables(name):
    cfg = Config.fromfile(osp.join(REPO, 'configs', name))
    model = build_model(cfg)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert type(wrapper.optimizer).__name__ == 'AdamW'
    decay_of = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in wrapper.optimizer.param_groups:
        for param in group['params']:
            decay_of[names[id(param)]] = group['weight_decay']
    norm_params = [n for n in decay_of if '.norm' in n and 'backbone' in n]
    table_params = [n for n in decay_of if 'relative_position_bias_table' in n]
    assert norm_params and all(decay_of[n] == 0 for n in norm_params + table_params)
    linear_weights = [n for n in decay_of if n.endswith('fsla.qkv.weight')]
    assert linear_weights and all(decay_of[n] > 0 for n in linear_weights)


TINY_SWIN = dict(type='BOATSwinTransformer', arch=dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)))


def _one_step(model, losses_fn):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    total, _ = model.parse_losses(losses_fn())
    assert torch.isfinite(total)
    total.backward()
    optimizer.step()


def test_stock_mmdet_config_with_boat_backbone_trains(tmp_path):
    from mmdet.testing import demo_mm_inputs
    path = tmp_path / 'swap.py'
    path.write_text(
        "_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'\n"
        "custom_imports = dict(imports=['boat_mm'], allow_failed_imports=False)\n"
        f"model = dict(backbone=dict(_delete_=True, **{TINY_SWIN!r}), neck=dict(in_channels=[16, 32, 64, 128]))\n")
    cfg = Config.fromfile(str(path))
    model = revert_sync_batchnorm(build_model(cfg)).train()
    assert type(model.backbone).__name__ == 'BOATSwinTransformer'
    packed = demo_mm_inputs(2, [[3, 96, 128], [3, 128, 96]], num_items=[2, 1], with_mask=True, num_classes=80)
    data = model.data_preprocessor(packed, True)
    _one_step(model, lambda: model.loss(data['inputs'], data['data_samples']))


def test_stock_mmseg_upernet_config_with_boat_backbone_trains(tmp_path):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    path = tmp_path / 'swap.py'
    path.write_text(
        "_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'\n"
        "custom_imports = dict(imports=['boat_mm'], allow_failed_imports=False)\n"
        "model = dict(backbone=dict(_delete_=True, type='BOATCSWinTransformer', arch=dict(embed_dims=16, "
        "depths=(1, 2, 2, 1), num_heads=(2, 2, 4, 4), split_sizes=(1, 2, 7, 7))),\n"
        "             decode_head=dict(in_channels=[16, 32, 64, 128], channels=32),\n"
        "             auxiliary_head=dict(in_channels=64, channels=16))\n")
    cfg = Config.fromfile(str(path))
    model = revert_sync_batchnorm(build_model(cfg)).train()
    assert type(model.backbone).__name__ == 'BOATCSWinTransformer'
    inputs = torch.randn(2, 3, 64, 96)
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(64, 96), pad_shape=(64, 96)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, 64, 96)))
        samples.append(sample)
    _one_step(model, lambda: model.loss(inputs, samples))
