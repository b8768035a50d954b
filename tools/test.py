"""Evaluate a checkpoint with any boat_mm config (the config's ``default_scope`` decides the toolbox).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--tta] [--out FILE|DIR] [--show-dir DIR]
                         [--cfg-options k=v ...]
    tools/dist_test.sh CONFIG CHECKPOINT GPUS [args]

--tta, --out and --show-dir mean what they mean in mmseg's, mmdet's and mmpretrain's tools/test.py
(boat_mm/engine/test_options.py): multi-scale + flip test-time augmentation; predictions written out (mmdet: a .pkl
and the COCO json files next to it; mmseg: label PNGs in a directory; mmpretrain: a .pkl); every test image
drawn by the toolbox's visualizer.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from mmengine.model import is_model_wrapper  # noqa: E402

import boat_mm  # noqa: E402,F401  (registers BOAT, applies compat fixes)
from boat_mm.engine.runner_setup import (
    add_common_args,
    build_runner,
    destroy_process_group_on_success,
    load_config,
    missing_files_reported,
    parse_common,
    prepare,
)
from boat_mm.engine.test_options import (
    attach_result_dumpers,
    configure_outputs,
    configure_show_dir,
    count_forward_passes,
    evaluation_only,
    pictures_in,
    use_tta,
)
from boat_mm.utils.datasets import DatasetNotFoundError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (evaluate) a checkpoint with a boat_mm config')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--tta', action='store_true',
                        help="test-time augmentation with the config's tta_model / tta_pipeline")
    parser.add_argument('--out', help='write predictions: a .pkl (mmdet, also COCO json; mmpretrain) or a '
                                      'directory of label PNGs (mmseg)')
    parser.add_argument('--show-dir', help='draw every test image with its prediction into this directory')
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
    evaluation_only(cfg)  # a test needs no training set, even where a hook asks for the train loop
    scope = cfg.get('default_scope', 'mmpretrain')
    notes, pictures = [], None
    try:
        if args.tta:
            notes.append(use_tta(cfg))
        if args.out:
            notes.append('predictions: ' + configure_outputs(cfg, args.out))
        if args.show_dir:
            pictures = configure_show_dir(cfg, args.show_dir)
        prepare(cfg, loaders=('test_dataloader',))
    except (ValueError, DatasetNotFoundError) as error:
        sys.exit(f'error: {error}')
    if args.check_only:
        return None
    rank0 = int(os.environ.get('RANK', '0')) == 0
    for note in notes:
        if rank0:
            print(f'[boat_mm] {note}')
    with missing_files_reported(), destroy_process_group_on_success():
        runner = build_runner(cfg)
        if args.out:
            attach_result_dumpers(runner, scope, args.out)
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model  # unwrap DDP
        if args.tta:
            with count_forward_passes(model.module) as passes:
                metrics = runner.test()
            if rank0:
                print(f'[boat_mm] {type(model).__name__} merged {passes.calls} forward passes of the wrapped '
                      f'{type(model.module).__name__} ({len(runner.test_dataloader.dataset)} images)')
        else:
            metrics = runner.test()
    if pictures and rank0:
        print(f'[boat_mm] {len(pictures_in(pictures))} pictures in {os.path.dirname(pictures)}')
    return metrics


if __name__ == '__main__':
    main()
