"""FSLA module: forward and forward+backward time per token and peak memory against N.

    python benchmarks/bench_fsla.py [--device cpu|cuda] [--max-tokens 200704] [--plot out.png]
                                    [--malloc-defaults] [--forward-only] [--backward-variants]

Module: C=96, 3 heads (BOAT-Swin-T stage 1), batch 2, fp32. The plain loop implementation from the
tests (a Python loop over clusters with explicit key sets) is timed at the smallest N as the baseline.
On CPU the table uses the allocator policy of tools/train.py (freed memory kept, boat_mm.utils.setup_env);
the same run then measures the forward growth under glibc's defaults in a child process, for comparison.

--backward-variants prints only a training table instead: forward + backward time and peak memory per token
with autograd's backward of the gathers (``BOAT_MM_CLUSTER_BACKWARD=autograd``, the implementation before
issue 22) and with the gather-free backward, timed in interleaved rounds (A B A B ...).
"""
import argparse
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    cluster_backward,
    configure_allocator,
    machine_description,
    markdown_table,
    median_seconds,
    peak_memory_mb,
)
from boat_mm.models.layers.feature_space_attention import FeatureSpaceLocalAttention  # noqa: E402
from boat_mm.utils.progress import note  # noqa: E402

TOKEN_COUNTS = (3136, 12544, 50176, 200704)  # 56^2, 112^2, 224^2, 448^2
EMBED_DIMS, NUM_HEADS, BATCH = 96, 3, 2
GROWTH_TARGET = (3136, 50176)  # the per-token growth target is between these two counts
MIN_SECONDS = 2.0  # by default, time every measurement for at least this long (median of the calls)


def square(n):
    side = int(round(n ** 0.5))
    return side, n // side


def bench(n, device, repeats, forward_only=False, min_seconds=MIN_SECONDS):
    note(f'FSLA at N={n} tokens', 'bench_fsla')
    torch.manual_seed(0)
    module = FeatureSpaceLocalAttention(EMBED_DIMS, NUM_HEADS).to(device)
    x = torch.randn(BATCH, n, EMBED_DIMS, device=device)
    hw = square(n)

    def forward():
        with torch.no_grad():
            module(x, hw)

    tokens = BATCH * n
    fwd = median_seconds(forward, repeats, min_seconds=min_seconds)
    row = dict(N=n, fwd_ms=round(fwd * 1e3, 1), fwd_us_per_token=round(fwd / tokens * 1e6, 2))
    if forward_only:
        return row
    x_grad = x.clone().requires_grad_()

    def forward_backward():
        module(x_grad, hw).sum().backward()

    fwd_bwd = median_seconds(forward_backward, max(1, repeats // 2), min_seconds=min_seconds)
    mem = peak_memory_mb(forward, device)
    row.update(fwd_bwd_ms=round(fwd_bwd * 1e3, 1), fwd_bwd_us_per_token=round(fwd_bwd / tokens * 1e6, 2),
               peak_mem_MB=round(mem, 1), mem_KB_per_token=round(mem * 1024 / tokens, 2))
    return row


# The backward implementations compared by --backward-variants: name -> value of BOAT_MM_CLUSTER_BACKWARD.
BACKWARD_VARIANTS = {'autograd (before)': 'autograd', 'gather-free (after)': 'gather'}


def bench_backward_variants(n, device, repeats, min_seconds=MIN_SECONDS):
    note(f'FSLA backward variants at N={n} tokens', 'bench_fsla')
    """One row: forward + backward us/token and peak KB/token of every backward variant, interleaved."""
    torch.manual_seed(0)
    module = FeatureSpaceLocalAttention(EMBED_DIMS, NUM_HEADS).to(device)
    x = torch.randn(BATCH, n, EMBED_DIMS, device=device, requires_grad=True)
    hw, tokens = square(n), BATCH * n

    def step(variant):
        def run():
            with cluster_backward(variant):
                module(x, hw).sum().backward()
        return run
    steps = {name: step(variant) for name, variant in BACKWARD_VARIANTS.items()}
    times = {name: [] for name in steps}
    for _ in range(repeats):  # rounds: every variant once, for at least min_seconds / repeats each
        for name, run in steps.items():
            times[name].append(median_seconds(run, 1, warmup=1, min_seconds=min_seconds / repeats))
    row = dict(N=n)
    for name, run in steps.items():
        seconds = statistics.median(times[name])
        row[f'{name} us/token'] = round(seconds / tokens * 1e6, 2)
        row[f'{name} KB/token'] = round(peak_memory_mb(run, device) * 1024 / tokens, 2)
    names = list(steps)
    row['time after/before'] = round(row[f'{names[1]} us/token'] / row[f'{names[0]} us/token'], 3)
    row['memory after/before'] = round(row[f'{names[1]} KB/token'] / row[f'{names[0]} KB/token'], 3)
    return row


def growth_line(first, row):
    return (f'forward time per token grows {row["fwd_us_per_token"] / first["fwd_us_per_token"]:.2f}x from '
            f'N={first["N"]} to N={row["N"]}')


def growth_with_malloc_defaults(min_seconds):
    """The growth line measured in a child process that keeps glibc's allocator defaults."""
    command = [sys.executable, os.path.abspath(__file__), '--malloc-defaults', '--forward-only',
               '--min-seconds', str(min_seconds), '--tokens', *map(str, GROWTH_TARGET)]
    result = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith('forward time per token')]
    return lines[0] + ' (glibc malloc defaults)' if lines else f'(malloc-defaults run failed: {result.stderr[-300:]})'


def bench_plain_loop(n):
    """The tests' obviously-correct loop implementation, for scale."""
    tests = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests')
    sys.path[:0] = [os.path.join(tests, 'test_models', 'test_layers'), tests]  # the test module and its conftest
    from test_feature_space_attention import plain_fsla
    torch.manual_seed(0)
    module = FeatureSpaceLocalAttention(EMBED_DIMS, NUM_HEADS).eval()
    x = torch.randn(BATCH, n, EMBED_DIMS)
    with torch.no_grad():
        seconds = median_seconds(lambda: plain_fsla(module, x, square(n)), min_runs=1, warmup=0)
    return dict(N=n, fwd_ms=round(seconds * 1e3, 1), fwd_us_per_token=round(seconds / (BATCH * n) * 1e6, 2))


def plot(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    ns = [r['N'] for r in rows]
    axes[0].plot(ns, [r['fwd_us_per_token'] for r in rows], 'o-', label='forward')
    axes[0].plot(ns, [r['fwd_bwd_us_per_token'] for r in rows], 's-', label='forward+backward')
    axes[0].set(xscale='log', xlabel='tokens N', ylabel='us per token', title='FSLA time per token')
    axes[0].legend()
    axes[1].plot(ns, [r['peak_mem_MB'] for r in rows], 'o-')
    axes[1].set(xscale='log', yscale='log', xlabel='tokens N', ylabel='MB', title='FSLA forward peak memory')
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--max-tokens', type=int, default=max(TOKEN_COUNTS))
    parser.add_argument('--tokens', type=int, nargs='+', default=list(TOKEN_COUNTS), help='token counts N')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--min-seconds', type=float, default=MIN_SECONDS,
                        help='time each measurement for at least this long')
    parser.add_argument('--plot', help='write a PNG plot here')
    parser.add_argument('--malloc-defaults', action='store_true',
                        help="keep glibc's allocator defaults (no boat_mm.utils.setup_env tuning)")
    parser.add_argument('--forward-only', action='store_true', help='time the forward only')
    parser.add_argument('--backward-variants', action='store_true',
                        help='only the training table: autograd backward vs gather-free backward')
    args = parser.parse_args(argv)
    allocator = configure_allocator(args.device, args.malloc_defaults)
    if args.backward_variants:
        print(f'# FSLA forward + backward by backward implementation, C={EMBED_DIMS}, {NUM_HEADS} heads, batch '
              f'{BATCH}, fp32, {machine_description(args.device)}, {allocator}')
        rows = [bench_backward_variants(n, args.device, args.repeats, args.min_seconds)
                for n in args.tokens if n <= args.max_tokens]
        print(markdown_table(rows, list(rows[0])))
        return rows
    print(f'# FSLA, C={EMBED_DIMS}, {NUM_HEADS} heads, batch {BATCH}, fp32, {machine_description(args.device)}, '
          f'{allocator}')
    rows = [bench(n, args.device, args.repeats, args.forward_only, args.min_seconds)
            for n in args.tokens if n <= args.max_tokens]
    print(markdown_table(rows, list(rows[0])))
    for r in rows[1:]:
        line = growth_line(rows[0], r)
        if not args.forward_only:
            line += f'; memory per token {r["mem_KB_per_token"]} KB (vs {rows[0]["mem_KB_per_token"]} KB)'
        print(line)
    if args.device == 'cpu' and not args.malloc_defaults and not args.forward_only:
        print(growth_with_malloc_defaults(args.min_seconds))
        loop = bench_plain_loop(TOKEN_COUNTS[0])
        print(f'plain loop implementation at N={loop["N"]}: {loop["fwd_ms"]} ms forward '
              f'({loop["fwd_ms"] / rows[0]["fwd_ms"]:.1f}x the module)')
    if args.plot and not args.forward_only:
        plot(rows, args.plot)
        print(f'plot written to {args.plot}')
    return rows


if __name__ == '__main__':
    main()
