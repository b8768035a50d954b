"""Whole backbones: BOAT-Swin-T against mmpretrain's Swin-T, BOAT-CSWin-T against itself with FSLA off.

    python benchmarks/bench_backbones.py [--device cpu|cuda] [--dtype fp32|bf16|fp16] [--compile]
                                         [--sizes 224 512 800x1216 896] [--backward] [--malloc-defaults]
                                         [--pairs swin cswin swin-twin]

All ratios come from the same run. Batch 4 at 224, batch 1 at the larger sizes. On CPU, freed memory
is kept for reuse as in tools/train.py (boat_mm.utils.setup_env) unless --malloc-defaults.
"""
import argparse
import os
import sys
from contextlib import nullcontext

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks.common import configure_allocator, machine_description, markdown_table, median_seconds  # noqa: E402
from boat_mm import BOATCSWinTransformer, BOATSwinTransformer  # noqa: E402
from boat_mm.utils.progress import note  # noqa: E402

DTYPES = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def models():
    """name -> builder of each compared backbone. Swin-T pads maps smaller than its window (the BOAT
    backbones always do): no effect at 224 and above, where every stage map is at least the window, and it
    lets small rehearsal sizes (benchmarks/gpu_check.py --rehearse) run."""
    from mmpretrain.models import SwinTransformer
    return {
        'Swin-T (mmpretrain)': lambda: SwinTransformer(arch='tiny', img_size=224, out_indices=(0, 1, 2, 3),
                                                       pad_small_map=True),
        'BOAT-Swin-T': lambda: BOATSwinTransformer('tiny'),
        'Swin-T (BOAT-Swin-T, FSLA off)': lambda: BOATSwinTransformer('tiny', fsla_stages=()),
        'CSWin-T (BOAT-CSWin-T, FSLA off)': lambda: BOATCSWinTransformer('tiny', fsla_stages=()),
        'BOAT-CSWin-T': lambda: BOATCSWinTransformer('tiny'),
    }


PAIRS = {'swin': ('BOAT-Swin-T', 'Swin-T (mmpretrain)'), 'cswin': ('BOAT-CSWin-T', 'CSWin-T (BOAT-CSWin-T, FSLA off)'),
         'swin-twin': ('BOAT-Swin-T', 'Swin-T (BOAT-Swin-T, FSLA off)')}
DEFAULT_PAIRS = ('swin', 'cswin')


def parse_size(text):
    h, _, w = text.partition('x')
    return int(h), int(w or h)


def run(args):
    device = args.device
    autocast = (torch.autocast(device, dtype=DTYPES[args.dtype]) if DTYPES[args.dtype] else nullcontext())
    pairs = [PAIRS[family] for family in args.pairs]
    wanted = {name for pair in pairs for name in pair}
    built = {name: make().to(device) for name, make in models().items() if name in wanted}
    for model in built.values():
        model.eval()  # (some toolbox backbones' train() returns None, so no chaining)
    if args.compile:
        # Static shapes: each stage is its own shape, and automatic dynamic shapes (after the first
        # recompile) made compiled BOAT-Swin-T 30% slower (0.4 vs 0.3 s per 4x224x224 batch here).
        built = {name: torch.compile(model, dynamic=False) for name, model in built.items()}
    # torch.compile recompiles on the first calls with a new input size: keep those out of the timing.
    warmup = 2 if args.compile else 1
    rows = []
    for size_text in args.sizes:
        height, width = parse_size(size_text)
        batch = 4 if (height, width) == (224, 224) else 1
        x = torch.randn(batch, 3, height, width, device=device)
        times = {}
        for name, model in built.items():
            note(f'{name} at {batch}x{height}x{width}', 'bench_backbones')

            def forward(model=model):
                with torch.no_grad(), autocast:
                    model(x)
            times[name, 'fwd'] = median_seconds(forward, args.repeats, warmup=warmup,
                                           min_seconds=args.min_seconds)
            if args.backward:
                model.train()

                def forward_backward(model=model):
                    with autocast:
                        outs = model(x)
                    sum(o.float().mean() for o in outs).backward()
                times[name, 'fwd+bwd'] = median_seconds(forward_backward, max(1, args.repeats // 2), warmup=warmup,
                                                        min_seconds=args.min_seconds)
                model.eval()
        for boat, base in pairs:
            for mode in ('fwd', 'fwd+bwd') if args.backward else ('fwd',):
                rows.append({'input': f'{batch}x{height}x{width}', 'mode': mode, 'model': boat,
                             'ms': round(times[boat, mode] * 1e3, 1), 'baseline': base,
                             'baseline ms': round(times[base, mode] * 1e3, 1),
                             'ratio': round(times[boat, mode] / times[base, mode], 2)})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', choices=sorted(DTYPES), default='fp32')
    parser.add_argument('--compile', action='store_true', help='torch.compile every model')
    parser.add_argument('--sizes', nargs='+', default=['224', '512', '800x1216', '896'])
    parser.add_argument('--backward', action='store_true', help='also time forward+backward')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--pairs', nargs='+', choices=sorted(PAIRS), default=list(DEFAULT_PAIRS),
                        help='which comparisons: swin (BOAT-Swin-T vs mmpretrain Swin-T), cswin (BOAT-CSWin-T, '
                             'FSLA on vs off), swin-twin (BOAT-Swin-T, FSLA on vs off)')
    parser.add_argument('--min-seconds', type=float, default=2.0,
                        help='time each model for at least this long (median of the calls)')
    parser.add_argument('--malloc-defaults', action='store_true',
                        help="keep glibc's allocator defaults (no boat_mm.utils.setup_env tuning)")
    args = parser.parse_args(argv)
    allocator = configure_allocator(args.device, args.malloc_defaults)
    print(f'# backbones, {args.dtype}{" + torch.compile" if args.compile else ""}, '
          f'{machine_description(args.device)}, {allocator}')
    rows = run(args)
    print(markdown_table(rows, list(rows[0])))
    return rows


if __name__ == '__main__':
    main()
