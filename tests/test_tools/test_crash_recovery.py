"""tools/train.py when things go wrong: killed after a checkpoint then resumed (same result as uninterrupted),
an image named by the annotations missing."""
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO

import boat_mm  # noqa: F401
from boat_mm.testing.demo_data import make_ade20k, make_coco

pytestmark = pytest.mark.slow  # trainings in subprocesses

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
    # the kill can land between the checkpoint's rename and mmengine's rewrite of last_checkpoint (seen in CI);
    # make that window the case tested: --resume must still continue from the newest checkpoint
    (crash_dir / 'last_checkpoint').write_text(str(crash_dir / 'iter_2.pth'))

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
