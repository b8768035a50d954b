"""BOAT as a drop-in: stock toolbox Swin configs with only ``type`` changed, the CSWin names, refusals."""
import warnings

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

from boat_mm import BOATCSWinTransformer, BOATSwinTransformer
from boat_mm.registry import toolbox_models

STOCK_SWIN_CONFIGS = {
    'mmseg-T': ('mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py', 'tiny'),
    'mmseg-B': ('mmseg::swin/swin-base-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py', 'base'),
    'mmdet-T': ('mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', 'tiny'),
    'mmdet-S': ('mmdet::swin/mask-rcnn_swin-s-p4-w7_fpn_amp-ms-crop-3x_coco.py', 'small'),
    'mmpretrain-T': ('mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py', 'tiny'),
}


def swapped_config(tmp_path, base: str, backbone: str = "type='BOATSwinTransformer', init_cfg=None") -> Config:
    """A user's config: the stock one with only the backbone type changed (and no download at test time)."""
    path = tmp_path / 'swap.py'
    path.write_text(f"_base_ = {base!r}\n"
                    "custom_imports = dict(imports=['boat_mm'], allow_failed_imports=False)\n"
                    f"model = dict(backbone=dict({backbone}))\n")
    return Config.fromfile(str(path))


def build(cfg):
    init_default_scope(cfg.default_scope)
    return toolbox_models(cfg.default_scope).build(cfg.model)


def num_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('name', sorted(STOCK_SWIN_CONFIGS))
def test_stock_swin_config_swaps_by_type_alone(tmp_path, name):
    base, arch = STOCK_SWIN_CONFIGS[name]
    cfg = swapped_config(tmp_path, base)
    stock = Config.fromfile(str(tmp_path / 'swap.py')).model.backbone
    model = build(cfg)
    backbone = model.backbone
    assert type(backbone) is BOATSwinTransformer
    ours = BOATSwinTransformer(arch=arch, out_indices=backbone.out_indices)
    assert num_params(backbone) == num_params(ours)
    assert {k: v.shape for k, v in backbone.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    # the stock settings are honoured, not just tolerated
    last_block = backbone.stages[-1].blocks[-1]
    assert last_block.drop_path.drop_prob == pytest.approx(stock.drop_path_rate)
    toolbox_default = (3,) if cfg.default_scope == 'mmpretrain' else (0, 1, 2, 3)  # as the toolbox's own Swin
    assert backbone.out_indices == tuple(stock.get('out_indices', toolbox_default))
    if cfg.default_scope == 'mmpretrain':
        with torch.no_grad():
            logits = model.eval()(torch.randn(1, 3, 224, 224), mode='tensor')
        assert logits.shape == (1, 1000)


def test_mmpretrain_384_config_swaps_by_type_alone(tmp_path):
    """mmpretrain's stock 384-pixel Swin config (``stage_cfgs=dict(block_cfgs=dict(window_size=12))``,
    ``img_size=384``) with only ``type`` changed: windows of 12 in every block, the layout of
    ``BOATSwinTransformer(arch='base', window_size=12)``, logits for a 384 x 384 image."""
    model = build(swapped_config(tmp_path, 'mmpretrain::swin_transformer/swin-base_16xb64_in1k-384px.py'))
    backbone = model.backbone
    assert {block.window_size for stage in backbone.stages for block in stage.blocks} == {12}
    ours = BOATSwinTransformer(arch='base', window_size=12, out_indices=backbone.out_indices)
    assert {k: v.shape for k, v in backbone.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    with torch.no_grad():
        logits = model.eval()(torch.randn(1, 3, 384, 384), mode='tensor')
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


def test_convert_weights_loads_official_swin_through_the_converter(tmp_path):
    """mmdet's stock Swin configs set convert_weights=True with the official Swin checkpoint in init_cfg."""
    from test_checkpoint_conversion import official_swin_state_dict
    state = official_swin_state_dict('tiny')
    path = tmp_path / 'swin_tiny_patch4_window7_224.pth'
    torch.save({'model': state}, str(path))
    cfg = swapped_config(tmp_path, STOCK_SWIN_CONFIGS['mmdet-T'][0],
                         f"type='BOATSwinTransformer', init_cfg=dict(type='Pretrained', checkpoint={str(path)!r})")
    assert cfg.model.backbone.convert_weights is True
    backbone = build(cfg).backbone
    from mmengine.logging import MMLogger
    logger = MMLogger.get_instance('drop_in_test', log_file=str(tmp_path / 'init.log'))
    assert logger is MMLogger.get_current_instance()
    backbone.init_weights()
    log = (tmp_path / 'init.log').read_text()
    assert torch.equal(backbone.stages[2].blocks[3].attn.qkv.weight, state['layers.2.blocks.3.attn.qkv.weight'])
    assert torch.equal(backbone.norm3.weight, state['norm.weight'])
    # FSLA is new: freshly initialised (trunc normal, zero bias), and listed in the log
    fsla = backbone.stages[0].blocks[1].fsla
    assert torch.all(fsla.qkv.bias == 0) and 0.01 < fsla.qkv.weight.std() < 0.03
    assert 'stages.0.blocks.1.fsla.qkv.weight' in log and 'stages.0.blocks.1.norm_fsla.weight' in log
    assert 'norm0.weight' in log  # detection output norms the classifier checkpoint has not
    assert 'attn.qkv.weight' not in log.replace('fsla.qkv.weight', '')


def test_stock_mmseg_init_cfg_in_openmmlab_swin_layout_is_converted(tmp_path):
    """mmseg's stock Swin configs name an mmseg-layout Swin checkpoint (no convert_weights flag): it loads."""
    from mmseg.models.backbones import SwinTransformer
    torch.manual_seed(0)
    peer_state = SwinTransformer(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)).state_dict()
    path = tmp_path / 'swin_tiny_mmseg.pth'
    torch.save({'state_dict': peer_state}, str(path))
    cfg = swapped_config(tmp_path, STOCK_SWIN_CONFIGS['mmseg-T'][0],
                         f"type='BOATSwinTransformer', init_cfg=dict(type='Pretrained', checkpoint={str(path)!r})")
    backbone = build(cfg).backbone
    backbone.init_weights()
    assert torch.equal(backbone.stages[1].blocks[0].mlp.fc1.weight,
                       peer_state['stages.1.blocks.0.ffn.layers.0.0.weight'])
    assert torch.equal(backbone.patch_embed.proj.weight, peer_state['patch_embed.projection.weight'])


def _demo_batch_config(cfg, data_root, scale, crop_size=None):
    """Point a stock config's training data at the demo data, at a CPU-sized scale; the model is untouched."""
    loader = cfg.train_dataloader
    loader.num_workers, loader.persistent_workers, loader.batch_size = 0, False, 2
    dataset = loader.dataset
    dataset.data_root = data_root
    for transform in dataset.pipeline:
        if 'scale' in transform:
            transform.scale = scale
        if 'crop_size' in transform and crop_size:
            transform.crop_size = crop_size
    return cfg


def _train_one_step(cfg):
    from mmengine.runner import Runner
    model = revert_sync_batchnorm(build(cfg)).train()
    loader = Runner.build_dataloader(cfg.train_dataloader)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    batch = next(iter(loader))
    before = model.backbone.stages[0].blocks[1].fsla.qkv.weight.detach().clone()
    losses = model.train_step(batch, optim_wrapper)
    assert losses and all(torch.isfinite(v).all() for v in losses.values())
    assert not torch.equal(before, model.backbone.stages[0].blocks[1].fsla.qkv.weight)


def test_stock_mmseg_swin_config_with_boat_trains_one_step_on_demo_data(tmp_path):
    from boat_mm.testing.demo_data import make_ade20k
    make_ade20k(str(tmp_path / 'ade'), num_train=2, num_val=1)
    cfg = swapped_config(tmp_path, STOCK_SWIN_CONFIGS['mmseg-T'][0])
    cfg.model.data_preprocessor.size = (128, 128)
    _train_one_step(_demo_batch_config(cfg, str(tmp_path / 'ade'), (256, 128), (128, 128)))


def test_stock_mmdet_swin_config_with_boat_trains_one_step_on_demo_data(tmp_path):
    from boat_mm.testing.demo_data import DEMO_CLASSES, make_coco
    make_coco(str(tmp_path / 'coco'), num_train=2, num_val=1)
    cfg = swapped_config(tmp_path, STOCK_SWIN_CONFIGS['mmdet-T'][0])
    cfg = _demo_batch_config(cfg, str(tmp_path / 'coco') + '/', (256, 192))
    cfg.train_dataloader.dataset.metainfo = dict(classes=DEMO_CLASSES)  # COCO's 80 names are not in the demo
    _train_one_step(cfg)


def test_stock_mmpretrain_swin_config_with_boat_trains_one_step_on_demo_data(tmp_path):
    """mmpretrain's 384-pixel Swin-B config (windows of 12 through ``stage_cfgs``), type swapped alone, trains a
    step on ImageNet-style demo folders at the config's own 384 crop."""
    from boat_mm.testing.demo_data import make_imagenet
    make_imagenet(str(tmp_path / 'imagenet'), num_train=2, num_val=1, size=96)
    cfg = swapped_config(tmp_path, 'mmpretrain::swin_transformer/swin-base_16xb64_in1k-384px.py')
    loader = cfg.train_dataloader
    loader.num_workers, loader.persistent_workers, loader.batch_size = 0, False, 2
    loader.dataset.data_root = str(tmp_path / 'imagenet')
    loader.dataset.pop('split', None)
    loader.dataset.update(ann_file='meta/train.txt', data_prefix='train')
    cfg.model.train_cfg = None  # Mixup / CutMix need more than 2 images of distinct classes to mean anything
    _train_one_step(cfg)


# --- the official CSWin names ---------------------------------------------------------------------

# The backbone of the official CSWin / BOAT-CSWin UperNet configs (segmentation/configs/cswin/*.py).
OFFICIAL_CSWIN_UPERNET_BACKBONES = {
    'tiny': dict(embed_dim=64, patch_size=4, depth=[1, 2, 21, 1], num_heads=[2, 4, 8, 16], split_size=[1, 2, 7, 7],
                 mlp_ratio=4., qkv_bias=True, qk_scale=None, drop_rate=0., attn_drop_rate=0., drop_path_rate=0.3,
                 use_chk=False, img_size=224, in_chans=3),
    'small': dict(embed_dim=64, depth=[2, 4, 32, 2], num_heads=[2, 4, 8, 16], split_size=[1, 2, 7, 7],
                  drop_path_rate=0.4, use_chk=False),
    'base': dict(embed_dim=96, depth=[2, 4, 32, 2], num_heads=[4, 8, 16, 32], split_size=[1, 2, 7, 7],
                 drop_path_rate=0.6, use_chk=True),
}


@pytest.mark.parametrize('arch', sorted(OFFICIAL_CSWIN_UPERNET_BACKBONES))
def test_official_cswin_names_build_the_same_backbone(arch):
    kwargs = OFFICIAL_CSWIN_UPERNET_BACKBONES[arch]
    model = BOATCSWinTransformer(**kwargs)
    ours = BOATCSWinTransformer(arch=arch)
    assert num_params(model) == num_params(ours)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    assert model.stages[-1].blocks[-1].drop_path.drop_prob == pytest.approx(kwargs['drop_path_rate'])
    assert model.stages[0].blocks[0].with_cp == kwargs['use_chk']


def test_cswin_upernet_config_swaps_by_type_alone(tmp_path):
    """A CSWin UperNet config (the official backbone dict, on mmseg's UperNet) with type='CSWin' changed only."""
    backbone = dict(type='BOATCSWinTransformer', **OFFICIAL_CSWIN_UPERNET_BACKBONES['tiny'])
    path = tmp_path / 'cswin.py'
    path.write_text("_base_ = 'mmseg::_base_/models/upernet_r50.py'\n"
                    "default_scope = 'mmseg'\n"
                    "custom_imports = dict(imports=['boat_mm'], allow_failed_imports=False)\n"
                    "norm_cfg = dict(type='BN', requires_grad=True)\n"
                    f"model = dict(pretrained=None, backbone=dict(_delete_=True, **{backbone!r}),\n"
                    "             decode_head=dict(in_channels=[64, 128, 256, 512], num_classes=150,\n"
                    "                              norm_cfg=norm_cfg),\n"
                    "             auxiliary_head=dict(in_channels=256, num_classes=150, norm_cfg=norm_cfg))\n")
    cfg = Config.fromfile(str(path))
    model = build(cfg).eval()
    assert num_params(model.backbone) == num_params(BOATCSWinTransformer('tiny'))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96), mode='tensor')
    assert out.shape == (1, 150, 16, 24)


# --- what is refused, and why ---------------------------------------------------------------------

@pytest.mark.parametrize('kwargs, match', [
    (dict(patch_size=2, strides=(4, 2, 2, 2)), r"strides=\(4, 2, 2, 2\) is not supported; strides\[0\] must equal "
                                               r"patch_size=2"),
    (dict(strides=(4, 2)), r"strides=\(4, 2\) is not supported; one stride per stage \(4\)"),
    (dict(strides=(4, -1, 2, 2)), r"stage 0 patch merging stride=-1 is not supported; an int >= 1"),
    (dict(stage_cfgs=dict(depth=3)), r"stage_cfgs\[0\]\['depth'\]=3 is not supported; it must equal the "
                                     r"backbone's 2"),
    (dict(stage_cfgs=dict(window_msa='WindowMSAV2')), r"stage_cfgs\[0\]=.* is not supported; it sets "
                                                      r"\['window_msa'\]"),
    (dict(stage_cfgs=dict(block_cfgs=dict(attn_cfgs=dict(window_msa='WindowMSAV3')))),
     r"attn_cfgs window_msa='WindowMSAV3' is not supported; one of \('WindowMSA', 'WindowMSAV2'\)"),
    (dict(stage_cfgs=dict(block_cfgs=dict(attn_cfgs=dict(window_msa='WindowMSAV2'))), qk_scale=0.5),
     r"qk_scale=0.5 is not supported; None with window_msa='WindowMSAV2'"),
    (dict(stage_cfgs=dict(block_cfgs=dict(ffn_cfgs=dict(num_fcs=1)))),
     r"block_cfgs\[0\].ffn_cfgs num_fcs=1 is not supported; an int >= 2, as mmcv's FFN asserts"),
    (dict(stage_cfgs=dict(block_cfgs=dict(attn_cfgs=dict(shift_size=7)))),
     r"block_cfgs\[0\] shift_size=7 is not supported; 0 <= shift_size < window_size=7"),
    (dict(stage_cfgs=[dict(), dict(downsample_cfg=dict(in_channels=7)), dict(), dict()]),
     r"stage_cfgs\[1\].downsample_cfg\['in_channels'\]=7 is not supported; it must equal the backbone's 192"),
    (dict(stage_cfgs=[dict(), dict()]), r'stage_cfgs=.* is not supported; one dict for all, or a sequence of 4'),
    (dict(patch_cfg=dict(padding='middle')), r"patch_cfg padding='middle' is not supported; one of \('corner', "
                                             r"'same'\)"),
    (dict(patch_cfg=dict(conv_type='Conv3d')), r"patch_cfg\['conv_type'\]='Conv3d' is not supported"),
    (dict(interpolate_mode='cubic'), r"interpolate_mode='cubic' is not supported; one of"),
    (dict(use_abs_pos_embed=True, img_size=224, pretrain_img_size=448), r'pretrain_img_size=448 is not supported; '
                                                                        r'give one pretraining size'),
    (dict(arch='tiny', embed_dims=128), r"arch='tiny' has embed_dims=96, but embed_dims=128 was also given"),
    (dict(arch='base', depths=[2, 2, 6, 2]), r"arch='base' has depths=\(2, 2, 18, 2\), but depths=\(2, 2, 6, 2\)"),
    (dict(pretrained='a.pth', init_cfg=dict(type='Pretrained', checkpoint='b.pth')),
     'init_cfg and pretrained cannot be set at the same time'),
])
def test_swin_refuses_what_it_cannot_honour(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BOATSwinTransformer(**kwargs)


@pytest.mark.parametrize('kwargs, match', [
    (dict(embed_dim=64, embed_dims=96), r'embed_dims=96 and its alias embed_dim=64 disagree'),
    (dict(arch='tiny', depth=[2, 4, 32, 2]), r"arch='tiny' has depths=\(1, 2, 21, 1\), but depths=\(2, 4, 32, 2\)"),
    (dict(in_chans=1, in_channels=3), r'in_channels=3 and its alias in_chans=1 disagree'),
])
def test_cswin_refuses_what_it_cannot_honour(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BOATCSWinTransformer(**kwargs)


def test_mmpretrain_stage_cfgs_set_the_window_of_every_block():
    """mmpretrain's ``stage_cfgs`` as mmpretrain takes them: one dict for every stage or one per stage, each
    with a ``window_size`` and ``block_cfgs`` (one dict for every block or one per block); the 384-pixel
    configs' ``stage_cfgs=dict(block_cfgs=dict(window_size=12))`` is ``window_size=12``."""
    arch = dict(embed_dims=16, depths=(2, 2), num_heads=(1, 2))

    def windows(model):
        return [[block.window_size for block in stage.blocks] for stage in model.stages]
    uniform = BOATSwinTransformer(arch=arch, stage_cfgs=dict(block_cfgs=dict(window_size=12)))
    assert windows(uniform) == [[12, 12], [12, 12]]
    torch.manual_seed(0)
    same = BOATSwinTransformer(arch=arch, window_size=12)
    torch.manual_seed(0)
    uniform = BOATSwinTransformer(arch=arch, stage_cfgs=dict(block_cfgs=dict(window_size=12)))
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(same.eval()(x), uniform.eval()(x)))
    mixed = BOATSwinTransformer(arch=arch, window_size=7, stage_cfgs=[dict(window_size=5),
                                                                      dict(block_cfgs=[dict(window_size=3), dict()])])
    assert windows(mixed) == [[5, 5], [3, 7]]
    with torch.no_grad():
        assert [o.shape[1] for o in mixed(x)] == [16, 32]


def test_nested_init_cfgs_initialise_their_modules():
    """mmpretrain's ``init_cfg`` in ``stage_cfgs``, ``block_cfgs``, ``ffn_cfgs`` and ``patch_cfg`` initialise
    their module after the backbone's fresh initialisation, parents before children, as mmengine does."""
    model = BOATSwinTransformer(
        arch=dict(embed_dims=16, depths=(2, 2), num_heads=(1, 2)), fsla_stages=(),
        patch_cfg=dict(init_cfg=dict(type='Constant', val=0.25, layer='Conv2d')),
        stage_cfgs=[dict(init_cfg=dict(type='Constant', val=0.5, layer='Linear'),
                         block_cfgs=[dict(), dict(ffn_cfgs=dict(init_cfg=dict(type='Constant', val=2.0,
                                                                               layer='Linear')))]),
                    dict()])
    model.init_weights()
    blocks = model.stages[0].blocks
    assert torch.all(model.patch_embed.proj.weight == 0.25)
    assert torch.all(blocks[0].attn.qkv.weight == 0.5) and torch.all(blocks[1].attn.proj.weight == 0.5)
    assert torch.all(blocks[1].mlp.fc1.weight == 2.0) and torch.all(blocks[0].mlp.fc1.weight == 0.5)
    assert 0.01 < model.stages[1].blocks[0].mlp.fc1.weight.std() < 0.03  # the fresh truncated normal


def test_cswin_takes_the_official_patch_size_and_says_it_changes_nothing():
    """The official CSWin's ``patch_size`` (default 16) is unused there; BOAT takes it too, with a warning."""
    with pytest.warns(UserWarning, match=r'patch_size=16 changes nothing, as in the official CSWin: the stem is a '
                                         r'7x7 convolution of stride 4'):
        model = BOATCSWinTransformer(**TWO_STAGE_CSWIN, patch_size=16)
    assert model.patch_embed.proj.stride == (4, 4)


def test_stock_defaults_written_out_change_nothing():
    """The stock Swins' defaults, written out in a config, build the model the defaults build."""
    torch.manual_seed(0)
    plain = BOATSwinTransformer(arch='tiny')
    torch.manual_seed(0)
    stock = BOATSwinTransformer(pretrain_img_size=384, img_size=384, interpolate_mode='bilinear', pad_small_map=False,
                                embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], strides=(4, 2, 2, 2),
                                patch_norm=True, use_abs_pos_embed=False, act_cfg=dict(type='GELU'),
                                norm_cfg=dict(type='LN'), out_after_downsample=False,
                                stage_cfgs=dict(), patch_cfg=dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(plain.eval()(x), stock.eval()(x)):
            assert torch.equal(a, b)


TWO_STAGE_SWIN = dict(arch=dict(embed_dims=16, depths=(2, 2), num_heads=(2, 4)), out_indices=(1,))
TWO_STAGE_CSWIN = dict(arch=dict(embed_dims=16, depths=(2, 2), num_heads=(2, 4), split_sizes=(1, 7)), out_indices=(1,))


def test_qk_scale_sets_the_window_attention_scale_only():
    model = BOATSwinTransformer(**TWO_STAGE_SWIN, qk_scale=0.5, fsla_stages=(0,))
    assert model.stages[0].blocks[0].attn.scale == 0.5 and model.stages[1].blocks[1].attn.scale == 0.5
    assert model.stages[0].blocks[1].fsla.scale == pytest.approx(8 ** -0.5)
    cswin = BOATCSWinTransformer(**TWO_STAGE_CSWIN, qk_scale=0.25)
    assert all(attn.scale == 0.25 for stage in cswin.stages for block in stage.blocks for attn in block.attns)


def test_pretrained_is_a_deprecated_alias_of_init_cfg():
    with pytest.warns(UserWarning, match='pretrained is deprecated'):
        model = BOATSwinTransformer(pretrained='checkpoints/x.pth')
    assert model.init_cfg == dict(type='Pretrained', checkpoint='checkpoints/x.pth')


def test_one_fsla_switch_in_both_backbones():
    swin = BOATSwinTransformer(**TWO_STAGE_SWIN, fsla_stages=())
    cswin = BOATCSWinTransformer(**TWO_STAGE_CSWIN, fsla_stages=(1,))
    assert not any('fsla' in k for k in swin.state_dict())
    assert {k.split('.')[1] for k in cswin.state_dict() if '.fsla.' in k} == {'1'}
    with pytest.warns(DeprecationWarning, match='with_fsla is deprecated'):
        old = BOATCSWinTransformer(**TWO_STAGE_CSWIN, with_fsla=False)
    assert not any('fsla' in k for k in old.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        BOATCSWinTransformer(**TWO_STAGE_CSWIN)


def test_out_indices_default_follows_the_toolbox(tmp_path):
    """mmpretrain's Swin returns the last stage, mmdet's and mmseg's every stage: unused output norms
    would get no gradient and stop DDP (find_unused_parameters=False) in a swapped classifier."""
    from mmengine.registry import DefaultScope
    assert BOATSwinTransformer().out_indices == (0, 1, 2, 3)
    for scope, expected in (('mmpretrain', (3,)), ('mmdet', (0, 1, 2, 3)), ('mmseg', (0, 1, 2, 3))):
        with DefaultScope.overwrite_default_scope(scope):
            assert BOATSwinTransformer().out_indices == expected
            assert BOATCSWinTransformer().out_indices == expected
    classifier = build(swapped_config(tmp_path, STOCK_SWIN_CONFIGS['mmpretrain-T'][0]))
    assert classifier.backbone.out_indices == (3,)
    assert num_params(classifier) == 30_265_186  # the released BOAT-Swin-T classifier
    loss = classifier.loss(torch.randn(2, 3, 64, 64), [_label(0), _label(1)])
    sum(loss.values()).backward()
    assert all(p.grad is not None for p in classifier.parameters() if p.requires_grad)


def _label(index):
    from mmpretrain.structures import DataSample
    return DataSample().set_gt_label(index)


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmdet', 'mmseg'])
@pytest.mark.parametrize('frozen_stages', [-1, 0, 1, 3])
def test_frozen_stages_freeze_what_the_toolboxs_own_swin_freezes(scope, frozen_stages):
    """The same ``frozen_stages`` means different things in the toolboxes (mmpretrain's Swin: stages 0..k,
    mmdet's and mmseg's: 0..k-1); a swapped-in BOAT-Swin follows the toolbox that builds it."""
    from mmengine.registry import DefaultScope

    def frozen(model):
        model.train()
        parts = {'patch_embed': model.patch_embed, **{f'stage{i}': s for i, s in enumerate(model.stages)},
                 **{f'norm{i}': getattr(model, f'norm{i}') for i in range(4)}}
        return {name: not any(p.requires_grad for p in part.parameters()) for name, part in parts.items()}
    with DefaultScope.overwrite_default_scope(scope):
        models = toolbox_models(scope)
        stock = models.build(dict(type='SwinTransformer', **({'arch': 'tiny'} if scope == 'mmpretrain' else {}),
                                  out_indices=(0, 1, 2, 3), frozen_stages=frozen_stages))
        ours = models.build(dict(type='BOATSwinTransformer', arch='tiny', out_indices=(0, 1, 2, 3),
                                 frozen_stages=frozen_stages))
    assert frozen(ours) == frozen(stock)
