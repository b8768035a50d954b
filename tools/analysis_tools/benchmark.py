"""Whole-model speed and memory of a config: inference images/s and one training step's time and peak memory.

    python tools/analysis_tools/benchmark.py CONFIG [CHECKPOINT] [--compare CONFIG2] [--device cpu|cuda]
                                             [--iters N] [--no-train]

Inference runs the whole classifier / segmentor / detector (data preprocessor included) on images that went
through the config's test pipeline, i.e. at its own test input size; a training step (forward, backward,
optimiser step with the config's optimiser) runs at the config's crop and per-GPU batch size. Images are
real-format demo data at photo size, generated in a temporary directory (boat_mm/analysis/benchmark.py).
Medians of --iters runs after one warm-up. With --compare, both models are built first and every timing round
runs one then the other (A B A B ...), so that a machine whose speed drifts slows both alike; the table gives
CONFIG's time and memory over CONFIG2's (e.g. a BOAT config against its baseline).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

import boat_mm  # noqa: E402,F401  (registers BOAT)
from boat_mm.analysis.benchmark import describe_machine, measure_all, speed_table  # noqa: E402
from boat_mm.utils.setup_env import retain_freed_memory  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?', help='weights (default: random; speed does not depend on them)')
    parser.add_argument('--compare', metavar='CONFIG2', help='a second config measured in the same run')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--iters', type=int, default=3, help='timed runs per measurement (median)')
    parser.add_argument('--no-train', action='store_true', help='inference only')
    args = parser.parse_args(argv)
    for kind, path in (('config', args.config), ('checkpoint', args.checkpoint), ('config', args.compare)):
        if path and not os.path.isfile(path):
            sys.exit(f'error: {kind} not found: {path}')
    if args.iters < 1:
        sys.exit('error: --iters must be >= 1')
    if args.device == 'cpu':
        retain_freed_memory()  # as tools/train.py: freed memory reused, not page-faulted again
    configs = [args.config] + ([args.compare] if args.compare else [])
    results = measure_all(configs, [args.checkpoint, None], args.device, args.iters, not args.no_train, progress=True)
    baseline = results[1] if args.compare else None
    print(f'# whole-model benchmark, {describe_machine(args.device)["device"]}, median of {args.iters}')
    print(speed_table(results, baseline))


if __name__ == '__main__':
    main()
