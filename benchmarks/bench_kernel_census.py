"""Kernel census of one FSLA module (C=96, 3 heads, batch 1): device kernels of a training forward and of its
backward on the GPU path, the torch ops (``BOAT_MM_NATIVE=0``) against the fused Triton kernels.

    python benchmarks/bench_kernel_census.py [--tokens 1024 3136 16384] [--real]

Runs on CPU: the torch path on the meta device (the GPU's control flow), the Triton path in Triton's
interpreter, dry by default (launches counted, not run; ``--real`` runs them, minutes at N=16384). Targets
(issue 32, ``boat_mm.analysis.kernel_census.CENSUS_TARGETS``): forward <= 40, backward <= 30, at most 4 more
per split level. On a GPU, ``benchmarks/gpu_check.py`` counts the profiler's CUDA kernels instead.
"""
import argparse
import os
import sys

# Triton reads this at its import, for its own library functions too: before anything imports triton.
os.environ.setdefault('TRITON_INTERPRET', '1')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine_description, markdown_table  # noqa: E402
from boat_mm.analysis.kernel_census import CENSUS_TARGETS, fsla_kernel_census  # noqa: E402

TOP_OPS = 6


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--tokens', type=int, nargs='+', default=[1024, 3136, 16384])
    parser.add_argument('--real', action='store_true', help='run the Triton launches instead of counting them')
    args = parser.parse_args()
    print(machine_description('cpu'))
    print(f'targets: forward <= {CENSUS_TARGETS["forward"]}, backward <= {CENSUS_TARGETS["backward"]}, '
          f'+{CENSUS_TARGETS["per_level"]} per split level\n')
    rows, top = [], []
    for tokens in args.tokens:
        for implementation in ('torch', 'triton'):
            census = fsla_kernel_census(tokens, implementation, dry=not args.real)
            rows.append([tokens, census['levels'], implementation, census['forward'], census['backward']])
            common = ', '.join(f'{name} {count}' for name, count in census['forward_ops'].most_common(TOP_OPS))
            top.append([tokens, implementation, common])
    print(markdown_table(rows, ['N', 'split levels', 'path', 'forward kernels', 'backward kernels']))
    print()
    print(markdown_table(top, ['N', 'path', f'forward: top {TOP_OPS} ops']))


if __name__ == '__main__':
    main()
