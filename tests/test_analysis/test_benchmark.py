"""The benchmark scripts run and print their tables; metafile.yml points at real configs."""
import json
import os
import os.path as osp
import platform
import re
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import REPO  # noqa: E402

from boat_mm.models.layers import triton_kernels
from boat_mm.utils.torch_features import TORCH_VERSION


def run(args):
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_bench_fsla_prints_table_and_plot(tmp_path):
    plot = tmp_path / 'fsla.png'
    out = run(['benchmarks/bench_fsla.py', '--max-tokens', '12544', '--repeats', '1', '--min-seconds', '0',
               '--plot', str(plot)])
    assert '| 3136 |' in out and '| 12544 |' in out
    assert 'forward time per token grows' in out and 'plain loop implementation' in out
    if platform.libc_ver()[0] == 'glibc':  # the comparison run under the allocator defaults
        assert 'glibc malloc keeps freed memory' in out
        assert re.search(r'grows [0-9.]+x from N=3136 to N=50176 \(glibc malloc defaults\)', out), out
    assert plot.stat().st_size > 0


def test_bench_fsla_compares_the_backward_implementations():
    out = run(['benchmarks/bench_fsla.py', '--backward-variants', '--tokens', '3136', '--repeats', '1',
               '--min-seconds', '0'])
    header = [line for line in out.splitlines() if line.startswith('| N |')][0]
    assert 'autograd (before) us/token' in header and 'gather-free (after) KB/token' in header
    row = [line for line in out.splitlines() if line.startswith('| 3136 |')][0]
    values = [float(v) for v in row.strip('| ').split(' | ')]
    assert len(values) == 7 and all(v > 0 for v in values)
    # Memory is deterministic: the gather-free backward keeps no gathered copies (measured 0.66x).
    assert values[-1] < 0.9, row


def test_bench_backbones_prints_ratios():
    out = run(['benchmarks/bench_backbones.py', '--sizes', '224', '--repeats', '1', '--min-seconds', '0',
               '--backward'])
    assert 'BOAT-Swin-T' in out and 'Swin-T (mmpretrain)' in out and 'BOAT-CSWin-T' in out
    assert out.count('| 4x224x224 |') == 4  # two pairs, forward and forward+backward


def test_metafile_lists_every_task_config():
    meta = yaml.safe_load(open(osp.join(REPO, 'metafile.yml')))
    configs = {m['Config'] for m in meta['Models']}
    assert all(osp.isfile(osp.join(REPO, c)) for c in configs)
    for family in ('swin', 'cswin'):
        for size in ('', '-s', '-b'):
            assert {f'configs/cls_boat_{family}{size}_imagenet.py', f'configs/upernet_boat_{family}{size}_ade20k.py',
                    f'configs/mask-rcnn_boat_{family}{size}_coco_1x.py'} <= configs
    params = {m['Name']: m['Metadata']['Parameters'] for m in meta['Models']}
    assert params['cls_boat_swin_imagenet'] == 30_265_186 and params['cls_boat_cswin-b_imagenet'] == 89_628_712


@pytest.mark.skipif(torch.cuda.is_available(), reason='with CUDA the script runs the GPU checks (minutes)')
def test_gpu_check_says_when_there_is_no_gpu():
    result = subprocess.run(['bash', 'benchmarks/gpu_check.sh'], cwd=REPO, capture_output=True, text=True,
                            timeout=120, env={**os.environ, 'PYTHON': sys.executable})
    assert result.returncode != 0 and 'gpu_check: no CUDA device' in result.stderr


def _gpu_check(out, *args):
    result = subprocess.run([sys.executable, 'benchmarks/gpu_check.py', '--rehearse', '--out', str(out), *args],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    with open(out / 'gpu_check.json') as summary:
        return result, json.load(summary)


@pytest.mark.skipif(TORCH_VERSION < (2, 11), reason="the GPU check is made for the GPU image's torch 2.11")
def test_gpu_check_rehearsal_runs_every_step_on_cpu(tmp_path):
    """The GPU check's step list on the CPU, what `gpu_check.sh --rehearse` runs after its install (time boxes
    tripled: this checks what the steps do, not how fast a shared CI machine is)."""
    from benchmarks.gpu_check import STEPS
    result, summary = _gpu_check(tmp_path, '--budget-s', '900', '--box-scale', '3')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [(s['step'], s['status']) for s in summary['steps']] == [(name, 'ok') for name in STEPS]
    checks = {c['check']: c['ok'] for c in summary['checks']}
    assert checks['boat_mm registered in mmpretrain'] and not [name for name, ok in checks.items() if ok is False]
    paths = ('torch ops', 'fused Triton')
    for n in (825, 196):
        for path in paths:
            assert checks[f'clusters float64 device == CPU, {path}, N={n}']
            assert checks[f'clusters float32 tie-free device == float64, {path}, N={n}']
    for n in (196, 825, 1):
        for dtype in ('float64', 'float32'):
            assert checks[f'fused attention {dtype} output and gradient == autograd, N={n}']
    for cls in ('BOATSwinTransformer', 'BOATCSWinTransformer'):
        for path in paths:
            assert checks[f'{cls} float64 device == CPU, {path}, at 1x49x67']
        assert checks[f'fp16 training step of {cls} finite'] and checks[f'bf16 training step of {cls} finite']
        assert checks[f'no host sync: {cls} forward, 1x3x97x131'] is None  # CUDA only, but the forward ran
    assert checks['CUDA graphs capture the training steps'] is None
    tables = summary['tables']
    assert [(r['path'], r['dtype'], r['N']) for r in tables['FSLA module']] == [
        (path, dtype, 196) for dtype in ('fp32', 'bf16') for path in paths]
    profile = {r['path']: r['kernels'] for r in tables['FSLA profile, fwd+bwd fp32']}
    assert profile['fused Triton'] < profile['torch ops'] / 4
    eager = tables['backbones, eager']
    assert len(eager) == 12 and all(r['fwd ms'] > 0 and r['fwd+bwd img/s'] > 0 for r in eager)
    ratios = tables['backbones, eager: ratios']
    assert {(r['pair'].split(' / ')[0], r['path']) for r in ratios} == {
        (boat, path) for boat in ('BOAT-Swin-T', 'BOAT-CSWin-T') for path in paths}
    assert [r['model'] for r in tables['backbones, torch.compile']] == ['BOAT-Swin-T', 'BOAT-CSWin-T']
    report = (tmp_path / 'gpu_check.md').read_text()
    assert all(f'| {name} | ok |' in report for name in STEPS) and '## backbones, eager: ratios' in report
    assert sorted(p.name for p in tmp_path.iterdir()) == ['gpu_check.json', 'gpu_check.log', 'gpu_check.md']


def test_gpu_check_records_a_step_cut_by_its_time_box_and_runs_the_next(tmp_path):
    result, summary = _gpu_check(tmp_path, '--steps', 'backbones_eager', 'environment', '--box-scale', '0.001')
    assert result.returncode == 1  # not every step ok
    statuses = [s['status'] for s in summary['steps']]
    assert statuses[0].startswith('timed out') and statuses[1].startswith('timed out')  # boxes of 0.11 and 0.03 s
    assert 'killed at its time box' in (tmp_path / 'gpu_check.log').read_text()
    assert 'cut by its time box' in (tmp_path / 'gpu_check.md').read_text()


@pytest.mark.skipif(triton_kernels.TRITON_VERSION < triton_kernels.MIN_INTERPRETER_TRITON,
                    reason=f'the census runs the fused kernels in Triton\'s interpreter, which needs triton >= '
                           f'{triton_kernels.MIN_INTERPRETER_TRITON}; this has {triton_kernels.TRITON_VERSION}')
def test_bench_kernel_census_prints_both_paths_within_targets():
    out = run(['benchmarks/bench_kernel_census.py', '--tokens', '1024', '3136'])
    counts = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip('|').split('|')]
        if len(cells) == 5 and cells[2] in ('torch', 'triton'):
            counts[int(cells[0]), cells[2]] = int(cells[3]), int(cells[4])
    assert set(counts) == {(n, path) for n in (1024, 3136) for path in ('torch', 'triton')}
    for n in (1024, 3136):
        assert counts[n, 'triton'][0] <= 40 and counts[n, 'triton'][1] <= 30
        assert counts[n, 'torch'][0] > 4 * counts[n, 'triton'][0]


def test_bench_deploy_prints_runtimes_and_parity():
    pytest.importorskip('onnxruntime')
    out = run(['benchmarks/bench_deploy.py', '--models', 'cswin', '--sizes', '64', '--backend', 'aot_eager',
               '--repeats', '1', '--min-seconds', '0'])
    rows = [line for line in out.splitlines() if line.startswith('| BOAT-CSWin-T | 1x3x64x64 |')]
    assert [row.split(' | ')[2] for row in rows] == ['pytorch eager', 'onnxruntime', 'torch.compile (aot_eager)']
    for row in rows[1:]:
        assert row.split(' | ')[-1].strip(' |') == '0.000%'  # no output moved at this size


def test_cpu_peak_memory_counts_nested_allocations_once():
    """linear (whose addmm allocates the output) then gelu, 1 MiB each, the first freed after the second: the
    peak is 2 MiB, not 3 (an op's total includes the ops it calls, which are events of their own)."""
    from boat_mm.analysis.benchmark import peak_memory_mb
    layer, x = torch.nn.Linear(1024, 1024), torch.randn(256, 1024)  # outputs: 256 x 1024 x 4 B = 1 MiB

    def forward():
        hidden = layer(x)
        return torch.nn.functional.gelu(hidden).sum()
    with torch.no_grad():
        assert peak_memory_mb(forward) == pytest.approx(2.0, abs=0.01)


def test_model_built_for_analysis_takes_the_configs_data_preprocessor():
    """As mmengine's Runner: a classifier config's top-level data_preprocessor (num_classes, needed by its
    Mixup / CutMix one-hot labels) reaches the model built by benchmark.py, get_flops.py and friends."""
    from boat_mm.utils.model_builder import build_model
    _, model = build_model(osp.join(REPO, 'configs', 'cls_boat_swin_imagenet.py'))
    assert model.data_preprocessor.num_classes == 1000


def test_bench_tta_sizes_runs_every_ade20k_scale():
    """The whole BOAT-CSWin-T UperNet at every TTA scale of a (small) image: one row per scale, growing tokens."""
    output = run(['benchmarks/bench_tta_sizes.py', '--image', '64x86'])
    rows = [line.split('|')[1:-1] for line in output.splitlines() if re.match(r'\| [\d.]+ \|', line)]
    assert [r[0].strip() for r in rows] == ['0.5', '0.75', '1', '1.25', '1.5', '1.75']
    tokens = [int(r[2]) for r in rows]
    assert tokens == sorted(tokens) and rows[-1][1].strip() == '112x150'


def test_bench_training_share_prints_ratios_targets_and_profile():
    out = run(['benchmarks/bench_training_share.py', '--pairs', 'cls_swin', '--profile', 'cls_swin',
               '--train-batch', '2', '--iters', '1', '--top', '3'])
    # The classifier pair's FLOPs ratio (1.16x at 224: FSLA in half the blocks) next to the measured ratios.
    row = r'\| cls_swin \| 2x3x224x224 \| 1\.1[0-9]{2}x \| [0-9.]+x \((met|not met), <= 1\.2[0-9]\)'
    assert re.search(row, out), out
    assert re.search(r'[0-9.]+x \((met|not met), <= 1\.20\)', out)  # memory target of ImageNet
    # The profile: the whole step and three ops, twin / before / after.
    assert '| op | twin ms | BOAT before ms | BOAT after ms |' in out
    assert re.search(r'\| step \| [0-9]+ \| [0-9]+ \| [0-9]+ \|', out)
    profile = out.split('| op | twin ms |')[1].split('\n#')[0]
    assert len([line for line in profile.splitlines() if line.startswith('| ')]) == 1 + 3  # step + --top


def test_bench_training_share_amp_measures_the_mixed_precision_configs():
    """--amp bf16: the pairs that have *_amp-bf16.py configs, trained under CPU autocast and judged by the
    mixed-precision targets (BOAT-Swin <= 1.30x); a pair without such configs is refused by name."""
    out = run(['benchmarks/bench_training_share.py', '--amp', 'bf16', '--pairs', 'cls_swin', '--train-batch', '2',
               '--iters', '1'])
    assert 'bf16 autocast training (configs *_amp-bf16.py)' in out, out
    assert '| train step (bf16) |' in out
    assert re.search(r'\| cls_swin \| 2x3x224x224 \| 1\.1[0-9]{2}x \| [0-9.]+x \((met|not met), <= 1\.30\)', out), out
    refused = subprocess.run([sys.executable, 'benchmarks/bench_training_share.py', '--amp', 'bf16', '--pairs',
                              'cls_cswin'], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and 'no bf16 configs for cls_cswin' in refused.stderr, refused.stderr
