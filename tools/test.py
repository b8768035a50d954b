"""Evaluate a checkpoint with any boat_mm config (the config's ``default_scope`` decides the toolbox).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...]
    tools/dist_test.sh CONFIG CHECKPOINT GPUS [args]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import boat_mm  # noqa: E402,F401  (registers BOAT, applies compat fixes)
from boat_mm.training import (DatasetNotFoundError, add_common_args, build_runner, load_config,  # noqa: E402
                              missing_files_reported, parse_common, prepare)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (evaluate) a checkpoint with a boat_mm config')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    add_common_args(parser)
    return parse_common(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isfile(args.checkpoint):
        sys.exit(f'error: checkpoint not found: {args.checkpoint}')
    if not os.path.isfile(args.config):
        sys.exit(f'error: config not found: {args.config}')
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    cfg.load_from = args.checkpoint
    try:
        prepare(cfg, loaders=('test_dataloader',))
    except DatasetNotFoundError as error:
        sys.exit(f'error: {error}')
    if args.check_only:
        return None
    with missing_files_reported():
        return build_runner(cfg).test()


if __name__ == '__main__':
    main()
