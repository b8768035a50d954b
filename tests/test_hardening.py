"""Bad inputs, untrusted or damaged checkpoints, crashes mid-training, missing data, extreme numerics."""
import os
import os.path as osp
import pickle
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import BACKBONES, TINY_ARCHS, OsSystemPayload, tiny_backbone
from mmengine.runner import load_checkpoint

import boat_mm  # noqa: F401
from boat_mm import BOATCSWinTransformer, BOATSwinTransformer, FeatureSpaceLocalAttention
from boat_mm.compat import DamagedCheckpointError
from boat_mm.converters import convert_checkpoint
from boat_mm.demo_data import make_ade20k, make_coco

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def tiny(cls, **kwargs):
    return tiny_backbone(cls, **kwargs).eval()


# --- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize('cls', BACKBONES)
@pytest.mark.parametrize('size', [(1, 1), (5, 3), (32, 32), (32, 2048), (2048, 32)])
def test_tiny_and_extreme_aspect_inputs(cls, size):
    model = tiny(cls)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert all(torch.isfinite(o).all() for o in outs)
    assert all(o.shape[2] >= 1 and o.shape[3] >= 1 for o in outs)


@pytest.mark.parametrize('cls', BACKBONES)
def test_wrong_channels_fail_before_any_work(cls, monkeypatch):
    model = tiny(cls)

    def no_work(*args, **kwargs):
        raise AssertionError('the patch embedding ran before the input was checked')

    monkeypatch.setattr(model.patch_embed, 'forward', no_work)
    for bad in (torch.randn(2, 1, 64, 64), torch.randn(2, 4, 64, 64), torch.randn(3, 64, 64)):
        with pytest.raises(ValueError, match=r'expects images of shape \(B, 3, H, W\), got'):
            model(bad)


@pytest.mark.parametrize('kwargs, match', [
    (dict(arch='giant'),
     r"unknown arch 'giant'; choose one of \['b', 'base', 'l', 'large', 's', 'small', 't', 'tiny'\]"),
    (dict(fsla_cfg=dict(cluster_size=1)), 'cluster_size must be >= 2'),
    (dict(fsla_cfg=dict(overlap=-3)), 'overlap must be >= 0'),
    (dict(fsla_cfg=dict(temperature=0.0)), 'temperature must be > 0'),
    (dict(fsla_cfg=dict(kmeans_iters=-1)), 'kmeans_iters must be >= 0'),
    (dict(fsla_cfg=dict(clusters=64)), r"fsla_cfg has unknown keys \['clusters'\]"),
    (dict(fsla_cfg=dict(overlap=8), overlap=10), r'overlap=10 contradicts fsla_cfg overlap=8'),
    (dict(fsla_stages=(7,)), r'fsla_stages must be stage indices in \[0, 4\)'),
    (dict(out_indices=(0, 9)), r'out_indices must be stage indices in \[0, 4\)'),
    (dict(frozen_stages=8), r'frozen_stages must be in \[-1, 4\]'),
])
def test_invalid_arguments_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BOATSwinTransformer(**kwargs)


@pytest.mark.parametrize('cls', BACKBONES)
def test_nan_in_one_image_leaves_the_others_exact(cls):
    """Documented behaviour: NaN/Inf propagate within their own image only; every other image of the
    batch gives exactly what it gives alone."""
    model = tiny(cls)
    x = torch.randn(3, 3, 64, 96)
    poisoned = x.clone()
    poisoned[0, :, 10:20, 30:40] = float('nan')
    poisoned[0, 1, 0, 0] = float('inf')
    with torch.no_grad():
        batched = model(poisoned)
        alone = [model(x[i:i + 1]) for i in (1, 2)]
    for level, out in enumerate(batched):
        assert not torch.isfinite(out[0]).all()
        for j, i in enumerate((1, 2)):
            assert torch.isfinite(out[i]).all()
            torch.testing.assert_close(out[i:i + 1], alone[j][level], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('kind', ['constant', 'large'])
def test_fsla_in_low_precision_autocast_stays_finite(dtype, kind):
    torch.manual_seed(0)
    module = FeatureSpaceLocalAttention(32, 2).eval()
    x = torch.ones(2, 3136, 32) if kind == 'constant' else 1e4 * torch.randn(2, 3136, 32)
    with torch.no_grad(), torch.autocast('cpu', dtype=dtype):
        out = module(torch.nn.functional.layer_norm(x, (32,)) if kind == 'constant' else x, (56, 56))
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize('cls', BACKBONES)
def test_backbone_bf16_autocast_with_large_inputs(cls):
    model = tiny(cls)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(1e4 * torch.randn(1, 3, 64, 64))
        const = model(torch.full((1, 3, 64, 64), 0.5))
    assert all(torch.isfinite(o.float()).all() for o in outs + const)


# --- checkpoints --------------------------------------------------------------------------------

@pytest.fixture
def saved_backbone(tmp_path):
    model = tiny(BOATSwinTransformer)
    path = tmp_path / 'good.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in model.state_dict().items()}}, str(path))
    return model, path


def _all_load_paths(path):
    """Every way a checkpoint enters boat_mm: mmengine load_checkpoint, init_cfg Pretrained, converter."""
    target = tiny(BOATSwinTransformer)
    yield 'load_checkpoint', lambda: load_checkpoint(target, str(path))
    pretrained = BOATSwinTransformer(arch=TINY_ARCHS[BOATSwinTransformer],
                                     init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    yield 'init_cfg', pretrained.init_weights
    yield 'converter', lambda: convert_checkpoint(str(path), str(path) + '.out')


@pytest.mark.parametrize('damage', ['truncated', 'garbage'])
def test_damaged_checkpoint_names_the_file(saved_backbone, damage):
    _, path = saved_backbone
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] if damage == 'truncated' else os.urandom(len(data)))
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


# --- crash and resume ----------------------------------------------------------------------------

DETERMINISTIC = """
_base_ = {base!r}
model = dict(
    backbone=dict(drop_path_rate=0.0, arch=dict(_delete_=True, embed_dims=16, depths=(1, 2, 2, 1),
                  num_heads=(2, 2, 4, 4), split_sizes=(1, 2, 7, 7))),
    decode_head=dict(in_channels=[16, 32, 64, 128], channels=16, dropout_ratio=0.0),
    auxiliary_head=dict(in_channels=64, channels=16, dropout_ratio=0.0))
pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
            dict(type='Resize', scale=(64, 64), keep_ratio=False), dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root={root!r}, pipeline=pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root={root!r}))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=8, val_interval=1000)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=8)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2, max_keep_ckpts=10))
randomness = dict(seed=0, deterministic=True)
"""


def _lrs(log):
    return {int(i): float(lr) for i, lr in re.findall(r'Iter\(train\) \[\s*(\d+)/8\]\s+base_lr: \S+ lr: (\S+)', log)}


def test_sigkill_after_checkpoint_then_resume_matches_uninterrupted(tmp_path):
    root = tmp_path / 'ade'
    make_ade20k(str(root), num_train=6, num_val=1, size=(64, 64))
    config = tmp_path / 'det.py'
    config.write_text(DETERMINISTIC.format(base=osp.join(REPO, 'configs/demo/upernet_boat_cswin_ade20k_demo.py'),
                                           root=str(root)))
    env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'OMP_NUM_THREADS': '1'}
    train = [sys.executable, 'tools/train.py', str(config)]
    full = subprocess.run(train + ['--work-dir', str(tmp_path / 'full')], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-3000:]

    crash_dir = tmp_path / 'crash'
    log_path = tmp_path / 'crash.log'
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(train + ['--work-dir', str(crash_dir)], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        deadline = time.time() + 600
        while not (crash_dir / 'iter_4.pth').exists():
            assert proc.poll() is None and time.time() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not list(crash_dir.glob('*.tmp')), 'a half-written checkpoint was left behind'
    latest = max(int(p.stem.split('_')[1]) for p in crash_dir.glob('iter_*.pth'))
    assert latest < 8, 'the job finished before it could be killed'

    resumed = subprocess.run(train + ['--work-dir', str(crash_dir), '--resume'], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert f'resumed epoch: 0, iter: {latest}' in log
    resumed_lrs = _lrs(log)
    assert min(resumed_lrs) == latest + 1
    full_lrs = _lrs(full.stdout + full.stderr)
    for it, lr in resumed_lrs.items():
        assert lr == pytest.approx(full_lrs[it], rel=1e-6)
    a = torch.load(str(tmp_path / 'full' / 'iter_8.pth'))
    b = torch.load(str(crash_dir / 'iter_8.pth'))
    for key, value in a['state_dict'].items():
        torch.testing.assert_close(b['state_dict'][key], value, rtol=1e-4, atol=1e-5)
    exp_avg = a['optimizer']['state'][0]['exp_avg']
    torch.testing.assert_close(b['optimizer']['state'][0]['exp_avg'], exp_avg, rtol=1e-4, atol=1e-6)


# --- datasets -----------------------------------------------------------------------------------

def test_missing_image_fails_with_its_path(tmp_path):
    root = tmp_path / 'coco'
    make_coco(str(root), num_train=2, num_val=1, size=(64, 64))
    missing = root / 'train2017' / '000000000001.jpg'
    missing.unlink()
    config = tmp_path / 'coco.py'
    config.write_text(
        f"_base_ = {osp.join(REPO, 'configs/demo/mask-rcnn_boat_swin_coco_demo.py')!r}\n"
        f"train_dataloader = dict(dataset=dict(data_root='{root}/'))\n"
        f"val_dataloader = dict(dataset=dict(data_root='{root}/'))\n"
        f"test_dataloader = val_dataloader\n"
        f"val_evaluator = dict(ann_file='{root}/annotations/instances_val2017.json')\n"
        f"test_evaluator = val_evaluator\n"
        "model = dict(backbone=dict(arch=dict(_delete_=True, embed_dims=16, depths=(2, 2, 2, 2), "
        "num_heads=(1, 2, 2, 4))), neck=dict(in_channels=[16, 32, 64, 128]))\n")
    result = subprocess.run([sys.executable, 'tools/train.py', str(config), '--work-dir', str(tmp_path / 'w')],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert f'error: file not found: {missing}' in result.stderr
    assert 'Traceback' not in result.stderr
