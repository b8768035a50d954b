"""configs/baselines/: every BOAT config has a twin with FSLA switched off (plain Swin / CSWin) under the
identical recipe; and the recipe values the released models were trained with."""
import glob
import importlib
import os.path as osp

import pytest
from conftest import REPO
from mmengine.config import Config
from mmengine.registry import init_default_scope

BOAT_CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', '*_boat_*.py')))
ARCH_OF = {'': 'tiny', '-s': 'small', '-b': 'base'}


def baseline_of(boat_path):
    return osp.join(REPO, 'configs', 'baselines', osp.basename(boat_path).replace('boat_', ''))


def build_model(cfg):
    init_default_scope(cfg.default_scope)
    return importlib.import_module(f'{cfg.default_scope}.registry').MODELS.build(cfg.model)


def _count(model, fsla_only=False):
    return sum(p.numel() for name, p in model.named_parameters()
               if not fsla_only or '.fsla.' in name or '.norm_fsla.' in name)


def test_every_boat_config_has_exactly_one_baseline():
    expected = {osp.basename(baseline_of(p)) for p in BOAT_CONFIGS}
    found = {osp.basename(p) for p in glob.glob(osp.join(REPO, 'configs', 'baselines', '*.py'))}
    assert len(BOAT_CONFIGS) == 30 and found == expected  # 24 recipes + 6 mixed-precision variants


@pytest.mark.parametrize('boat_path', BOAT_CONFIGS, ids=[osp.basename(p) for p in BOAT_CONFIGS])
def test_baseline_is_its_boat_twin_without_fsla(boat_path):
    boat_cfg, base_cfg = Config.fromfile(boat_path), Config.fromfile(baseline_of(boat_path))
    # Same recipe: everything but the backbone is equal.
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg', 'train_dataloader', 'test_dataloader',
                'custom_hooks', 'auto_scale_lr', 'default_scope'):
        assert base_cfg.get(key) == boat_cfg.get(key), key
    boat_model_cfg, base_model_cfg = boat_cfg.model.to_dict(), base_cfg.model.to_dict()
    boat_backbone, base_backbone = boat_model_cfg.pop('backbone'), base_model_cfg.pop('backbone')
    assert base_model_cfg == boat_model_cfg
    assert base_backbone.pop('fsla_stages') == ()
    boat_init, base_init = boat_backbone.pop('init_cfg', None), base_backbone.pop('init_cfg', None)
    assert base_backbone == boat_backbone
    if boat_cfg.default_scope == 'mmpretrain':
        assert base_init is None and boat_init is None  # ImageNet training from scratch, both
    else:
        family = 'cswin' if 'CSWin' in boat_backbone['type'] else 'swin'
        assert base_init == dict(boat_init, checkpoint=f'checkpoints/{family}_{boat_backbone["arch"]}_in1k.pth')
    # The parameter count of the FSLA-off model: BOAT's minus its FSLA (attention + norm) parameters.
    boat_model, base_model = build_model(boat_cfg), build_model(base_cfg)
    assert _count(base_model, fsla_only=True) == 0
    assert _count(base_model) == _count(boat_model) - _count(boat_model, fsla_only=True)


@pytest.mark.parametrize('size,drop_path', [('', 0.3), ('-s', 0.4), ('-b', 0.6)])
def test_ade20k_boat_cswin_drop_path_is_the_public_cswin_recipe(size, drop_path):
    cfg = Config.fromfile(osp.join(REPO, 'configs', f'upernet_boat_cswin{size}_ade20k.py'))
    assert cfg.model.backbone.drop_path_rate == drop_path


@pytest.mark.parametrize('size,decay,weight_decay', [('', 0.99984, 0.05), ('-s', 0.99984, 0.05),
                                                     ('-b', 0.99992, 0.1)])
def test_imagenet_boat_cswin_trains_with_the_released_ema(size, decay, weight_decay):
    cfg = Config.fromfile(osp.join(REPO, 'configs', f'cls_boat_cswin{size}_imagenet.py'))
    (hook,) = [h for h in cfg.custom_hooks if h['type'] == 'EMAHook']
    assert hook['momentum'] == pytest.approx(1 - decay, rel=1e-9)
    assert cfg.optim_wrapper.optimizer.weight_decay == weight_decay


def test_boat_cswin_classifier_is_evaluated_on_its_ema_weights(tmp_path):
    """The EMAHook of configs/cls_boat_cswin_imagenet.py, on the demo classifier with a tiny BOAT-CSWin: a
    checkpoint tested as tools/test.py does runs the EMA weights, not the raw ones."""
    import torch
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from boat_mm.testing.demo_data import make_imagenet
    make_imagenet(str(tmp_path / 'imagenet'), num_train=4, num_val=2, size=32)
    cswin_hooks = Config.fromfile(osp.join(REPO, 'configs', 'cls_boat_cswin_imagenet.py')).custom_hooks
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'demo', 'cls_boat_swin_imagenet_demo.py'))
    cfg.model.backbone = dict(type='BOATCSWinTransformer', out_indices=(3, ), arch=dict(
        embed_dims=16, depths=(1, 1, 1, 1), num_heads=(2, 2, 4, 4), split_sizes=(1, 2, 7, 7)))
    cfg.model.head.in_channels = 128
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = str(tmp_path / 'imagenet')
    # The config's hook; a large momentum only so that EMA and raw weights differ after 2 iterations.
    cfg.custom_hooks = [dict(hook, momentum=0.5) for hook in cswin_hooks]
    cfg.train_cfg = dict(by_epoch=True, max_epochs=3, val_interval=10)  # 1 iteration per epoch
    cfg.work_dir = str(tmp_path / 'work')
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)

    class RecordTestWeights(Hook):
        seen = []
        name = None

        def before_test_iter(self, runner, batch_idx, data_batch=None):
            self.seen.append(dict(runner.model.named_parameters())[self.name].detach().clone())

    Runner.from_cfg(cfg.copy()).train()
    checkpoint = torch.load(osp.join(cfg.work_dir, 'epoch_3.pth'), map_location='cpu')
    name = RecordTestWeights.name = 'backbone.patch_embed.proj.weight'
    # EMAHook saves the averaged weights as the checkpoint's state_dict (the raw ones under ema_state_dict).
    ema, raw = checkpoint['state_dict'][name], checkpoint['ema_state_dict'][f'module.{name}']
    assert not torch.allclose(raw, ema)
    # As tools/test.py CONFIG CHECKPOINT runs it: a new runner that loads the checkpoint and tests.
    cfg.load_from = osp.join(cfg.work_dir, 'epoch_3.pth')
    tester = Runner.from_cfg(cfg)
    tester.register_hook(RecordTestWeights(), priority='LOWEST')
    tester.test()
    assert RecordTestWeights.seen and all(torch.equal(w, ema) for w in RecordTestWeights.seen)
