"""Registers, stack (spills) and shared memory of FSLA's Triton kernels on every NVIDIA architecture, without a GPU.

    python benchmarks/kernel_resources.py [--archs 80 90] [--arithmetics fp32 bf16] [--head-dims 32]
        [--json out.json] [--workers 2]

Compiles each kernel as the launcher configures it (``boat_mm/models/layers/triton_launch_configs.py``) for
sm_70 ... sm_120 x fp32 (IEEE), fp32 with TF32 products, bf16, fp16, fp64 x head dim 16 / 32 / 64 x 49 and 69
slots per cluster, reads ``cuobjdump -res-usage`` of the cubin, prints one table per head dim (cells:
'registers / stack bytes / shared KB', '!' over the arch's limit) and the launcher's violations (compile errors,
spills on sm_80 / sm_90, shared memory over the limit), and writes JSON. Exit status 1 if there is a violation.

Needs triton only: where torch is not installed (an environment holding the GPU image's ``triton==3.6.0``), the
package's modules are imported without running ``boat_mm/__init__.py`` (which imports torch).
"""
import argparse
import importlib.util
import json
import os
import sys
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The report's compile cache (per kernel source, configuration and triton version), outside the repository.
DEFAULT_CACHE = os.path.join(os.path.expanduser('~'), '.cache', 'boat_mm', 'kernel_resources')


def _import_without_torch():
    """Make ``boat_mm.analysis.kernel_resources`` importable where torch is not: its packages become empty
    modules with the right ``__path__`` (their ``__init__`` files import torch), its own imports need triton
    alone."""
    for name, folder in (('boat_mm', 'boat_mm'), ('boat_mm.models', 'boat_mm/models'),
                         ('boat_mm.models.layers', 'boat_mm/models/layers'), ('boat_mm.analysis', 'boat_mm/analysis')):
        package = types.ModuleType(name)
        package.__path__ = [os.path.join(REPO, folder)]
        sys.modules[name] = package


sys.path.insert(0, REPO)
if importlib.util.find_spec('torch') is None:
    _import_without_torch()

from boat_mm.analysis import kernel_resources as resources  # noqa: E402
from boat_mm.models.layers import triton_launch_configs as configs  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--archs', type=int, nargs='+', default=list(configs.ARCHITECTURES))
    parser.add_argument('--arithmetics', nargs='+', default=list(configs.ARITHMETICS))
    parser.add_argument('--head-dims', type=int, nargs='+', default=list(configs.HEAD_DIMS))
    parser.add_argument('--slots', type=int, nargs='+', default=list(configs.CLUSTER_SLOTS))
    parser.add_argument('--kernels', nargs='+', default=list(resources.KERNELS))
    parser.add_argument('--json', help='write every row here')
    parser.add_argument('--workers', type=int, default=os.cpu_count() or 1)
    parser.add_argument('--cache-dir', default=DEFAULT_CACHE, help="compiled results ('' for none)")
    args = parser.parse_args()
    import triton
    cases = resources.report_cases(args.archs, args.arithmetics, args.head_dims, args.slots, args.kernels)
    print(f'triton {triton.__version__}: {len(cases)} kernels compiled as the launcher configures them')
    rows = resources.resource_report(cases, args.cache_dir or None, args.workers)
    print('cells: registers / stack bytes per thread / shared KB (! over the arch limit), in parentheses where the '
          'launcher runs the torch ops instead; launch: BLOCK_* sizes, warps, stages')
    for head_dim in args.head_dims:
        print(f'\nhead_dim {head_dim}\n')
        print(resources.format_table(rows, head_dim))
    problems = resources.violations(rows)
    print(f'\n{len(problems)} violation(s) where the launcher runs the fused kernels')
    for problem in problems:
        print('  ' + problem)
    print('\nFirst split levels at stage 1 of the GPU check\'s shapes (fp32 queries, head dim 32): programs per '
          '_split_keys launch and the bytes each reads; an H100 has 132 SMs, an A100 108')
    occupancy = {}
    print('\n| shape | level | programs | MB per program | MB per launch |\n|---|---|---|---|---|')
    for shape, (images, heads, tokens) in resources.GPU_CHECK_STAGE1.items():
        occupancy[shape] = resources.split_level_occupancy(images, heads, tokens)
        for level in occupancy[shape]:
            print(f"| {shape} | {level['level']} | {level['programs']} | {level['bytes_per_program'] / 2**20:.2f} | "
                  f"{level['launch_bytes'] / 2**20:.0f} |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(triton=triton.__version__, rows=rows, violations=problems, occupancy=occupancy), f, indent=1)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
