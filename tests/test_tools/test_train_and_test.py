"""tools/: train, test, distributed launch, resume and missing-data errors, each on the demo data."""
import os
import os.path as osp
import platform
import re
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO

from boat_mm.testing.demo_data import make_ade20k, make_coco, make_imagenet

pytestmark = pytest.mark.slow  # trainings, exports, launched processes
TIMEOUT = 900

# Small overrides of the demo configs: tiny widths so a few iterations take seconds.
OVERRIDES = {
    'seg': ('configs/demo/upernet_boat_cswin_ade20k_demo.py', """
        model = dict(
            backbone=dict(arch=dict(_delete_=True, embed_dims=16, depths=(1, 2, 2, 1), num_heads=(2, 2, 4, 4),
                                    split_sizes=(1, 2, 7, 7))),
            decode_head=dict(in_channels=[16, 32, 64, 128], channels=32),
            auxiliary_head=dict(in_channels=64, channels=16))
        train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                                dataset=dict(data_root='{root}/ade20k'))
        val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root='{root}/ade20k'))
        test_dataloader = val_dataloader
        train_cfg = dict(max_iters=4, val_interval=4)
        param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2)]
        default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
    """),
    'det': ('configs/demo/mask-rcnn_boat_swin_coco_demo.py', """
        model = dict(backbone=dict(arch=dict(_delete_=True, embed_dims=16, depths=(2, 2, 2, 2),
                                             num_heads=(1, 2, 2, 4))),
                     neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
                     rpn_head=dict(in_channels=32, feat_channels=32),
                     roi_head=dict(bbox_roi_extractor=dict(out_channels=32), bbox_head=dict(in_channels=32),
                                   mask_roi_extractor=dict(out_channels=32), mask_head=dict(in_channels=32)))
        train_dataloader = dict(dataset=dict(data_root='{root}/coco/'))
        val_dataloader = dict(dataset=dict(data_root='{root}/coco/'))
        test_dataloader = val_dataloader
        val_evaluator = dict(ann_file='{root}/coco/annotations/instances_val2017.json')
        test_evaluator = val_evaluator
        train_cfg = dict(max_epochs=1, val_interval=1)
        default_hooks = dict(logger=dict(interval=1))
    """),
    'cls': ('configs/demo/cls_boat_swin_imagenet_demo.py', """
        model = dict(backbone=dict(arch=dict(_delete_=True, embed_dims=16, depths=(2, 2, 2, 2),
                                             num_heads=(1, 2, 2, 4))),
                     head=dict(in_channels=128))
        train_dataloader = dict(dataset=dict(data_root='{root}/imagenet'))
        val_dataloader = dict(dataset=dict(data_root='{root}/imagenet'))
        test_dataloader = val_dataloader
        train_cfg = dict(max_epochs=1, val_interval=1)
        default_hooks = dict(logger=dict(interval=1))
    """),
}
METRIC_PATTERNS = {'seg': r'mIoU: ([\d.]+)', 'det': r'coco/segm_mAP: ([\d.-]+)', 'cls': r'accuracy/top1: ([\d.]+)'}


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo_data')
    make_ade20k(str(root / 'ade20k'), num_train=4, num_val=2, size=(64, 64))
    make_coco(str(root / 'coco'), num_train=4, num_val=2, size=(96, 128))
    make_imagenet(str(root / 'imagenet'), num_train=6, num_val=3, size=32)
    return str(root)


def small_config(tmp_path, demo_root, task):
    base, body = OVERRIDES[task]
    path = tmp_path / f'{task}_small.py'
    path.write_text(f"_base_ = {osp.join(REPO, base)!r}\n" + textwrap.dedent(body).format(root=demo_root))
    return str(path)


def run(args, cwd=REPO, env=None):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
                            env={**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})})
    return result, result.stdout + result.stderr


def train(config, work_dir, *extra):
    return run([sys.executable, 'tools/train.py', config, '--work-dir', str(work_dir), *extra])


@pytest.mark.parametrize('task', ['seg', 'det', 'cls'])
def test_train_then_test_produces_the_metric(tmp_path, demo_root, task):
    config = small_config(tmp_path, demo_root, task)
    result, log = train(config, tmp_path / 'work')
    assert result.returncode == 0, log[-3000:]
    checkpoints = sorted((tmp_path / 'work').glob('*.pth'))
    assert checkpoints, log[-2000:]
    result, log = run([sys.executable, 'tools/test.py', config, str(checkpoints[-1]),
                       '--work-dir', str(tmp_path / 'test')])
    assert result.returncode == 0, log[-3000:]
    metric = re.findall(METRIC_PATTERNS[task], log)
    assert metric, log[-2000:]
    assert float(metric[-1]) >= 0


def test_resume_continues_from_the_checkpoint_iteration(tmp_path, demo_root):
    config = small_config(tmp_path, demo_root, 'seg')
    work = tmp_path / 'work'
    result, log = train(config, work, '--cfg-options', 'train_cfg.max_iters=2', 'train_cfg.val_interval=100')
    assert result.returncode == 0, log[-3000:]
    assert (work / 'iter_2.pth').exists()
    if platform.libc_ver()[0] == 'glibc':  # CPU runs keep freed memory (boat_mm.utils.setup_env), and say so
        assert '[boat_mm] glibc malloc keeps freed memory' in log
    result, log = train(config, work, '--resume')
    assert result.returncode == 0, log[-3000:]
    assert 'resumed epoch: 0, iter: 2' in log
    iterations = [int(i) for i in re.findall(r'Iter\(train\) \[\s*(\d+)/4\]', log)]
    assert iterations == [3, 4]


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.parametrize('task', ['seg', 'cls'])
def test_dist_train_two_cpu_processes(tmp_path, demo_root, task):
    """Two CPU processes (gloo) train BOAT-CSWin (seg) and BOAT-Swin (cls); DDP never has to copy a
    gradient whose layout differs from its bucket (PyTorch warns when it does: a copy every step)."""
    config = small_config(tmp_path, demo_root, task)
    schedule = (['train_cfg.max_iters=2', 'train_cfg.val_interval=100'] if task == 'seg'
                else ['train_cfg.max_epochs=1', 'train_cfg.val_interval=100'])
    result, log = run(['bash', 'tools/dist_train.sh', config, '2', '--work-dir', str(tmp_path / 'work'),
                       '--cfg-options', *schedule],
                      env={'PYTHON': sys.executable, 'PORT': str(_free_port()), 'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, log[-4000:]
    assert 'distributed on CPU: gloo backend' in log
    assert '[boat_mm] distributed: world size 2, backend gloo' in log, log[-3000:]
    assert re.search(r'Iter\(train\) \[2/2\]' if task == 'seg' else r'Epoch\(train\) \[1\]', log)
    assert 'Grad strides do not match bucket view strides' not in log, log[-3000:]


def test_process_group_is_destroyed_after_success_only(tmp_path):
    """tools/train.py and tools/test.py end a successful run by destroying the process group (gloo threads
    that outlive it could abort the rank at interpreter exit); after an error it is left to the exit."""
    import torch.distributed as dist

    from boat_mm.engine.runner_setup import destroy_process_group_on_success
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    try:
        with pytest.raises(RuntimeError), destroy_process_group_on_success():
            raise RuntimeError('a failed run')
        assert dist.is_initialized()
        with destroy_process_group_on_success():
            dist.all_reduce(torch.ones(1))
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_missing_dataset_names_the_path_and_the_demo(tmp_path):
    result, log = run([sys.executable, osp.join(REPO, 'tools/train.py'),
                       osp.join(REPO, 'configs/upernet_boat_cswin_ade20k.py'), '--work-dir', str(tmp_path)],
                      cwd=str(tmp_path))
    assert result.returncode != 0
    assert 'data/ade/ADEChallengeData2016' in log
    assert 'make_demo_data.py' in log and 'Traceback' not in log


def test_make_demo_data_cli_writes_all_formats(tmp_path):
    result, log = run([sys.executable, 'tools/make_demo_data.py', str(tmp_path)])
    assert result.returncode == 0, log
    assert (tmp_path / 'coco/annotations/instances_val2017.json').exists()
    assert (tmp_path / 'imagenet/meta/train.txt').exists()
    assert len(list((tmp_path / 'ade20k/annotations/validation').glob('*.png'))) > 0


def test_demo_trains_evaluates_and_writes_overlays(tmp_path, demo_root):
    result, log = run([sys.executable, 'tools/demo.py', '--iters', '2', '--data-root', demo_root,
                       '--work-dir', str(tmp_path / 'demo')])
    assert result.returncode == 0, log[-3000:]
    match = re.search(r'validation mIoU: ([\d.]+) \(chance level, uniform random guess: ([\d.]+)\)', log)
    assert match, log[-2000:]
    overlays = list((tmp_path / 'demo' / 'overlays').glob('*.png'))
    assert len(overlays) == 2
    from PIL import Image
    width, height = Image.open(overlays[0]).size
    assert width == 3 * height  # image | ground truth | prediction


@pytest.mark.parametrize('script,args', [
    ('tools/dist_train.sh', ['configs/upernet_boat_cswin_ade20k.py', '8']),
    ('tools/dist_test.sh', ['configs/upernet_boat_cswin_ade20k.py', '{checkpoint}', '8']),
    ('tools/slurm_train.sh', ['partition', 'job', 'configs/upernet_boat_cswin_ade20k.py', '{work_dir}']),
    ('tools/slurm_test.sh', ['partition', 'job', 'configs/upernet_boat_cswin_ade20k.py', '{checkpoint}']),
], ids=['dist_train', 'dist_test', 'slurm_train', 'slurm_test'])
def test_launch_scripts_report_missing_data_once(tmp_path, script, args):
    """How users start: the config's ADE20K is not there. One message naming the path, exit status 1, no
    traceback and no process group started (torchrun / srun never run)."""
    checkpoint = tmp_path / 'model.pth'
    checkpoint.write_bytes(b'')  # only its existence is checked before the data
    args = [a.format(checkpoint=checkpoint, work_dir=tmp_path / 'work') for a in args]
    root = tmp_path / 'no_ade20k'
    result = subprocess.run(['bash', script, *args, '--cfg-options', f'train_dataloader.dataset.data_root={root}',
                             f'val_dataloader.dataset.data_root={root}', f'test_dataloader.dataset.data_root={root}'],
                            cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT,
                            env={**os.environ, 'PYTHON': sys.executable})
    log = result.stdout + result.stderr
    assert result.returncode == 1, log[-3000:]
    assert log.count('does not exist') == 1 and str(root) in log, log[-3000:]
    assert 'Traceback' not in log and 'ChildFailedError' not in log and 'srun' not in log, log[-3000:]


def test_compare_runs_on_two_demo_runs(tmp_path, demo_root):
    """BOAT and its FSLA-off baseline trained for a few iterations on the ADE20K-format demo data, then
    compared: one table row per run with mIoU final / best, params (the baseline's fewer), FLOPs and time;
    loss and mIoU curves as PNGs."""
    config = small_config(tmp_path, demo_root, 'seg')
    boat_dir, base_dir = tmp_path / 'boat', tmp_path / 'baseline'
    for work_dir, extra in ((boat_dir, []), (base_dir, ['--cfg-options', 'model.backbone.fsla_stages=[]'])):
        result, log = train(config, work_dir, *extra)
        assert result.returncode == 0, log[-3000:]
    out = tmp_path / 'compare'
    result, log = run([sys.executable, 'tools/analysis_tools/compare_runs.py', str(boat_dir), str(base_dir),
                       '--out', str(out)])
    assert result.returncode == 0, log[-3000:]
    table = (out / 'compare.md').read_text().splitlines()
    header = [cell.strip() for cell in table[0].strip('|').split('|')]
    rows = {line.split('|')[1].strip(): [cell.strip() for cell in line.strip('|').split('|')] for line in table[2:]}
    assert set(rows) == {'boat', 'baseline'}
    assert header[:3] == ['run', 'mIoU final', 'mAcc final'] and 'mIoU best (step)' in header
    params = header.index('params (M)')
    assert float(rows['baseline'][params]) < float(rows['boat'][params])
    assert rows['boat'][header.index('iterations')] == '4'
    assert '[compare_runs] params and FLOPs of boat (builds its model): ' in result.stderr  # progress, on stderr
    for name in ('loss.png', 'mIoU.png'):
        from PIL import Image
        assert Image.open(out / name).size[0] > 100
    missing = run([sys.executable, 'tools/analysis_tools/compare_runs.py', str(tmp_path / 'nothing')])[0]
    assert missing.returncode == 1 and 'work dir not found' in missing.stderr


def test_benchmark_tool_compares_boat_with_its_baseline(tmp_path, demo_root):
    """Whole segmentor, BOAT against FSLA off, in one run: the test input is what the config's test pipeline
    makes of a 512x683 photo (Resize into 128x128 keeping the ratio: 96x128), the training batch is the config's; the
    BOAT model takes more memory than its baseline, and the ratios say so."""
    config = small_config(tmp_path, demo_root, 'seg')
    baseline = tmp_path / 'seg_baseline.py'
    baseline.write_text(f"_base_ = {config!r}\nmodel = dict(backbone=dict(fsla_stages=()))\n")
    result, log = run([sys.executable, 'tools/analysis_tools/benchmark.py', config, '--compare', str(baseline),
                       '--iters', '1'])
    assert result.returncode == 0, log[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith('| ')]
    header = [c.strip() for c in lines[0].strip('|').split('|')]
    assert header[:6] == ['config', 'test input', 'images/s', 'train batch', 'train step s', 'peak train MB']
    rows = [[c.strip() for c in line.strip('|').split('|')] for line in lines[1:]]
    assert [r[0] for r in rows] == ['seg_small.py', 'seg_baseline.py']
    assert all(r[1] == '3x96x128' and r[3] == '2x3x128x128' for r in rows), rows
    memory_ratio = float(rows[0][header.index('memory ratio')])
    assert memory_ratio > 1.0 and float(rows[1][header.index('memory ratio')]) == 1.0
    phases = [line for line in result.stderr.splitlines() if line.startswith('[benchmark] ')]
    assert any(line.startswith('[benchmark] training steps: 1 interleaved round(s)') and line.endswith(' s')
               for line in phases), phases  # a line per phase, with its time
    missing = run([sys.executable, 'tools/analysis_tools/benchmark.py', str(tmp_path / 'none.py')])[0]
    assert missing.returncode == 1 and 'config not found' in missing.stderr
