"""BOAT against its FSLA-off twin: training step, peak training memory and inference, next to the FLOPs ratio.

    python benchmarks/bench_training_share.py [--pairs NAME ...] [--iters 3] [--device cpu|cuda]
                                              [--train-batch N] [--profile NAME ...] [--top 12]
                                              [--amp bf16|fp16]

The six tiny-config pairs of the README (ImageNet classifiers, COCO Mask R-CNN 1x, ADE20K UperNet; BOAT-Swin-T
and BOAT-CSWin-T each), measured with ``boat_mm.analysis.benchmark.measure_all`` (timing rounds interleaved, medians
of --iters), and the whole-model FLOPs ratio of each pair at its training crop (``tools/analysis_tools/
get_flops.py``'s counter, FSLA counted in full). Targets of issue 22, printed next to every ratio: training step
<= 1.05 x the FLOPs ratio, inference <= 1.05 x the FLOPs ratio, peak training memory <= 1.20x (ImageNet) and
<= 1.10x (COCO, ADE20K).

--profile NAME runs one profiled training step of that pair's BOAT config, its twin, and BOAT again with
``BOAT_MM_CLUSTER_BACKWARD=autograd`` (autograd's backward of the gathers: the implementation before issue 22),
and prints the ops that make the difference between BOAT and its twin.

--amp DTYPE measures the pairs that have mixed-precision configs (``*_amp-bf16.py`` / ``*_amp-fp16.py`` and
their twins in configs/baselines/) instead: the training step under autocast (on CPU bf16 only, as
tools/train.py runs it: ``CPUAmpOptimWrapper``), judged by the mixed-precision targets of issue 33 (BOAT-Swin
<= 1.30x, BOAT-CSWin <= 1.35x its twin); inference stays fp32, as the configs' test loops run it.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import boat_mm  # noqa: E402,F401  (registers BOAT)
from benchmarks.common import cluster_backward, machine_description, markdown_table  # noqa: E402
from boat_mm.analysis import complexity_of_config  # noqa: E402
from boat_mm.analysis.benchmark import measure_all, profile_train_step  # noqa: E402
from boat_mm.utils.progress import note  # noqa: E402
from boat_mm.utils.setup_env import retain_freed_memory  # noqa: E402

# name: (BOAT config, FSLA-off twin, memory target)
PAIRS = {
    'cls_swin': ('configs/cls_boat_swin_imagenet.py', 'configs/baselines/cls_swin_imagenet.py', 1.20),
    'cls_cswin': ('configs/cls_boat_cswin_imagenet.py', 'configs/baselines/cls_cswin_imagenet.py', 1.20),
    'det_swin': ('configs/mask-rcnn_boat_swin_coco_1x.py', 'configs/baselines/mask-rcnn_swin_coco_1x.py', 1.10),
    'det_cswin': ('configs/mask-rcnn_boat_cswin_coco_1x.py', 'configs/baselines/mask-rcnn_cswin_coco_1x.py', 1.10),
    'seg_swin': ('configs/upernet_boat_swin_ade20k.py', 'configs/baselines/upernet_swin_ade20k.py', 1.10),
    'seg_cswin': ('configs/upernet_boat_cswin_ade20k.py', 'configs/baselines/upernet_cswin_ade20k.py', 1.10),
}
TIME_TARGET_OVER_FLOPS = 1.05  # train step and inference: at most this times the pair's FLOPs ratio
AMP_STEP_TARGETS = {'swin': 1.30, 'cswin': 1.35}  # mixed-precision training step, BOAT / twin, by backbone
AMP_DTYPES = ('bf16', 'fp16')


def amp_config(config: str, dtype: str) -> str:
    """The mixed-precision variant of a config: configs/x.py -> configs/x_amp-bf16.py."""
    return f'{config[:-len(".py")]}_amp-{dtype}.py'


def amp_pairs(dtype: str):
    """The pairs whose BOAT config and twin both have a ``dtype`` variant."""
    return [name for name, (boat, twin, _) in PAIRS.items()
            if os.path.isfile(amp_config(boat, dtype)) and os.path.isfile(amp_config(twin, dtype))]


def _hw(shape: str):
    """'64x3x224x224' -> (224, 224)."""
    return tuple(int(v) for v in shape.split('x')[-2:])


def flops_ratio(boat: str, twin: str, shape) -> float:
    return complexity_of_config(boat, shape)['flops'] / complexity_of_config(twin, shape)['flops']


def _verdict(value: float, target: float) -> str:
    return f'{value:.2f}x ({"met" if value <= target else "not met"}, <= {target:.2f})'


def share_rows(names, device, iters, train_batch, amp=None):
    rows = []
    for name in names:
        note(f'{name}: BOAT and its twin, whole training steps{f" ({amp} autocast)" if amp else ""}',
             'bench_training_share')
        boat, twin, memory_target = PAIRS[name]
        if amp:
            boat, twin = amp_config(boat, amp), amp_config(twin, amp)
        result, base = measure_all([boat, twin], device=device, iters=iters, train_batch=train_batch)
        flops = flops_ratio(boat, twin, _hw(result.train_input))
        step = result.train_step_seconds / base.train_step_seconds
        step_target = AMP_STEP_TARGETS[name.split('_')[-1]] if amp else TIME_TARGET_OVER_FLOPS * flops
        memory = result.peak_train_memory_mb / base.peak_train_memory_mb
        inference = base.images_per_second / result.images_per_second
        rows.append({'pair': name, 'train batch': result.train_input, 'FLOPs ratio': f'{flops:.3f}x',
                     f'train step{f" ({amp})" if amp else ""}': _verdict(step, step_target),
                     'step s (BOAT / twin)': f'{result.train_step_seconds:.2f} / {base.train_step_seconds:.2f}',
                     'peak train memory': _verdict(memory, memory_target),
                     'memory GB': f'{result.peak_train_memory_mb / 1024:.2f} / {base.peak_train_memory_mb / 1024:.2f}',
                     'inference': _verdict(inference, TIME_TARGET_OVER_FLOPS * flops)})
        print(f'# measured {name}', file=sys.stderr, flush=True)
    return rows


def profile_rows(name, device, train_batch, top):
    """Per-op self time of one training step: BOAT, its twin and BOAT before issue 22, largest differences."""
    boat, twin, _ = PAIRS[name]
    after = profile_train_step(boat, device, train_batch)
    base = profile_train_step(twin, device, train_batch)
    with cluster_backward('autograd'):
        before = profile_train_step(boat, device, train_batch)
    for times in (after, base, before):  # what no aten op accounts for: the clustering kernel, Python
        times['(outside aten ops)'] = times['step'] - sum(v for k, v in times.items() if k != 'step')
    ops = sorted((set(after) | set(before)) - {'step'},
                 key=lambda op: -max(abs(after.get(op, 0) - base.get(op, 0)), abs(before.get(op, 0) - base.get(op, 0))))
    rows = []
    for op in ['step'] + ops[:top]:
        a, b, t = after.get(op, 0.0), before.get(op, 0.0), base.get(op, 0.0)
        rows.append({'op': op, 'twin ms': f'{t:.0f}', 'BOAT before ms': f'{b:.0f}', 'BOAT after ms': f'{a:.0f}',
                     'before - twin (share of step)': f'{b - t:+.0f} ({100 * (b - t) / before["step"]:+.1f}%)',
                     'after - twin (share of step)': f'{a - t:+.0f} ({100 * (a - t) / after["step"]:+.1f}%)'})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--pairs', nargs='*', choices=list(PAIRS), default=list(PAIRS))
    parser.add_argument('--iters', type=int, default=3, help='timed rounds per measurement (median)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--train-batch', type=int, help="replace the configs' per-GPU batch (small test runs)")
    parser.add_argument('--profile', nargs='*', choices=list(PAIRS), default=[], help='profile these pairs')
    parser.add_argument('--top', type=int, default=12, help='ops listed per profile')
    parser.add_argument('--amp', choices=AMP_DTYPES,
                        help='the pairs with mixed-precision configs, training under autocast (see above)')
    args = parser.parse_args(argv)
    if args.amp:
        available = amp_pairs(args.amp)
        pairs = available if args.pairs == list(PAIRS) else args.pairs
        missing = sorted(set(pairs) - set(available))
        if missing:
            parser.error(f'no {args.amp} configs for {", ".join(missing)}; pairs with them: {", ".join(available)}')
        args.pairs = pairs
    if args.device == 'cpu':
        retain_freed_memory()  # as tools/train.py
    header = machine_description(args.device)
    for name in args.profile:
        rows = profile_rows(name, args.device, args.train_batch, args.top)
        print(f'# one profiled training step, {name} ({PAIRS[name][0]} vs {PAIRS[name][1]}), {header}')
        print(markdown_table(rows, list(rows[0])))
    if args.pairs:
        precision = f'{args.amp} autocast training (configs *_amp-{args.amp}.py)' if args.amp else 'fp32'
        print(f'# BOAT / FSLA-off twin, {precision}, {header}, median of {args.iters}')
        share = share_rows(args.pairs, args.device, args.iters, args.train_batch, args.amp)
        print(markdown_table(share, list(share[0])))


if __name__ == '__main__':
    main()
