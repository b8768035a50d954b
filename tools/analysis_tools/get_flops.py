"""Parameters and FLOPs of any boat_mm config (FSLA projections, attention, LePE and clustering counted).

    python tools/analysis_tools/get_flops.py CONFIG [--shape H W]

Default input: 224x224 (classification), 512x512 (segmentation), 800x1280 i.e. 1280x800 (detection).
One multiply-add counts as one FLOP, as in the OpenMMLab model zoos.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import boat_mm  # noqa: E402,F401
from boat_mm.analysis import complexity_of_config  # noqa: E402
from boat_mm.utils.progress import phase  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'), help='input height and width')
    args = parser.parse_args(argv)
    with phase(f'building {args.config} and counting its FLOPs', 'get_flops'):
        stats = complexity_of_config(args.config, args.shape)
    height, width = stats['shape']
    print(f'config:     {args.config}')
    print(f'input:      1x3x{height}x{width}')
    print(f'params:     {stats["params"] / 1e6:.2f} M ({stats["params"]:,})')
    print(f'FLOPs:      {stats["flops"] / 1e9:.2f} G ({stats["flops"]:,})')
    print(f'  of which FSLA: {stats["fsla_flops"] / 1e9:.2f} G in {stats["fsla_calls"]} calls '
          f'(a generic counter saw only {stats["generic_flops_seen_in_fsla"] / 1e9:.2f} G of it)')


if __name__ == '__main__':
    main()
