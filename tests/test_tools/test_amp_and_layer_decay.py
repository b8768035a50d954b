"""Mixed precision and layer-wise lr decay (issue 33), each in training runs of the tiny demo configs: the
``*_amp-bf16.py`` configs' optimizer wrapper trains on the CPU (finite losses, FSLA still clustering in
float32), and layer-wise lr decay trains a detector and a segmentor (whose models have no get_layer_depth)
and a classifier."""
import math
import os.path as osp

import pytest
import torch
from conftest import REPO
from mmengine.config import Config
from test_train_and_test import demo_root, small_config  # noqa: F401  (fixture)

from boat_mm.engine.runner_setup import build_runner, load_config, prepare
from boat_mm.models.layers import clustering

pytestmark = pytest.mark.slow  # trainings

TASKS = ('cls', 'det', 'seg')
# The AMP variant of each task's config, whose optim_wrapper settings the demo config takes over.
AMP_CONFIGS = {'cls': 'cls_boat_swin_imagenet_amp-bf16.py', 'det': 'mask-rcnn_boat_swin_coco_1x_amp-bf16.py',
               'seg': 'upernet_boat_cswin_ade20k_amp-bf16.py'}
TRAIN_ITERS = 2
LAYER_DECAY_RATE = 0.8


def _short_training(cfg):
    """At most TRAIN_ITERS iterations of training, no validation, no checkpoint."""
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=TRAIN_ITERS)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.param_scheduler = None
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    for hook in ('visualization',):
        cfg.default_hooks.pop(hook, None)
    return cfg


def _train(tmp_path, demo_root, task, **optim_wrapper):  # noqa: F811
    config = small_config(tmp_path, demo_root, task)
    cfg = load_config(config, dict(optim_wrapper=optim_wrapper), str(tmp_path / 'work'))
    _short_training(cfg)
    prepare(cfg, loaders=('train_dataloader',))
    runner = build_runner(cfg)
    runner.train()
    return runner


@pytest.mark.parametrize('task', TASKS)
def test_bf16_config_trains_on_cpu_with_float32_clustering(tmp_path, demo_root, task, monkeypatch):  # noqa: F811
    amp = Config.fromfile(osp.join(REPO, 'configs', AMP_CONFIGS[task])).optim_wrapper
    assert (amp.type, amp.dtype) == ('AmpOptimWrapper', 'bfloat16')
    seen = []  # (dtype of the queries FSLA hands over, dtype the clustering computes in, autocast on there)
    original = clustering._cluster

    def recording_cluster(q, *args, **kwargs):
        seen.append((q.dtype, torch.is_autocast_enabled('cpu') if hasattr(torch, 'get_autocast_dtype')
                     else torch.is_autocast_cpu_enabled()))
        return original(q, *args, **kwargs)
    monkeypatch.setattr(clustering, '_cluster', recording_cluster)
    monkeypatch.setenv('BOAT_MM_NATIVE', '1')
    runner = _train(tmp_path, demo_root, task, type=amp.type, dtype=amp.dtype, loss_scale=amp.loss_scale)
    assert type(runner.optim_wrapper).__name__ == 'CPUAmpOptimWrapper'
    assert runner.optim_wrapper.cast_dtype == torch.bfloat16
    losses = [float(v) for v in runner.message_hub.get_scalar('train/loss').data[0]]
    assert len(losses) == TRAIN_ITERS and all(math.isfinite(v) for v in losses)
    assert seen and all(dtype == torch.float32 and not autocast for dtype, autocast in seen)
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())


def test_fp16_config_on_cpu_says_it_needs_a_gpu(tmp_path, demo_root):  # noqa: F811
    if torch.cuda.is_available():
        pytest.skip('with CUDA the fp16 config trains')
    amp = Config.fromfile(osp.join(REPO, 'configs', 'cls_boat_swin_imagenet_amp-fp16.py')).optim_wrapper
    with pytest.raises(ValueError, match='float16 mixed precision .* needs a CUDA GPU'):
        _train(tmp_path, demo_root, 'cls', type=amp.type, dtype=amp.dtype, loss_scale=amp.loss_scale)


LAYER_DECAY_CONSTRUCTORS = {
    # mmpretrain's classifiers have get_layer_depth: its own constructor, type swapped only
    'cls': dict(constructor='LearningRateDecayOptimWrapperConstructor'),
    # detectors and segmentors do not: the constructor that asks their backbone
    'det': dict(constructor='BackboneLayerDecayOptimWrapperConstructor'),
    'seg': dict(constructor='BackboneLayerDecayOptimWrapperConstructor'),
}


@pytest.mark.parametrize('task', TASKS)
def test_layer_decay_trains_with_one_lr_per_depth(tmp_path, demo_root, task):  # noqa: F811
    import boat_mm.engine.optimizers.layer_decay_optim_wrapper_constructor  # noqa: F401  (registers)
    runner = _train(tmp_path, demo_root, task, paramwise_cfg=dict(layer_decay_rate=LAYER_DECAY_RATE),
                    **LAYER_DECAY_CONSTRUCTORS[task])
    model = runner.model
    backbone = model.backbone
    groups = runner.optim_wrapper.optimizer.param_groups
    num_layers = backbone.get_layer_depth('patch_embed.proj.weight')[1]
    base_lr = max(group['lr'] for group in groups)
    depths_seen = set()
    for group in groups:
        name = group['param_name']
        depth = backbone.get_layer_depth(name, 'backbone.')[0]
        depths_seen.add(depth)
        assert group['lr'] == pytest.approx(base_lr * LAYER_DECAY_RATE ** (num_layers - depth - 1)), name
    assert depths_seen == set(range(num_layers))
    losses = [float(v) for v in runner.message_hub.get_scalar('train/loss').data[0]]
    assert len(losses) == TRAIN_ITERS and all(math.isfinite(v) for v in losses)
