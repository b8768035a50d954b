"""Train any boat_mm config (mmpretrain, mmdet or mmseg: the config's ``default_scope`` decides).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr] [--no-validate]
                          [--cfg-options k=v ...]
    tools/dist_train.sh CONFIG GPUS [args]        # torchrun, also multi-node and CPU (gloo)

The log says, at the start of training, the total batch (processes x per-GPU batch) and the learning rate the
optimizer starts from; --auto-scale-lr scales it by total batch / the config's auto_scale_lr.base_batch_size
(as in mmdet and mmpretrain).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import boat_mm  # noqa: E402,F401  (registers BOAT, applies compat fixes)
from boat_mm.engine.hooks.train_setup_hook import TrainSetupLogger
from boat_mm.engine.runner_setup import (
    add_common_args,
    build_runner,
    destroy_process_group_on_success,
    disable_validation,
    enable_auto_scale_lr,
    latest_checkpoint,
    load_config,
    missing_files_reported,
    parse_common,
    prepare,
)
from boat_mm.utils.datasets import DatasetNotFoundError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model with a boat_mm config')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from the given checkpoint, or from the latest one in the work dir')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision (needs a GPU)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help="scale the learning rate by the real total batch over the config's "
                             'auto_scale_lr.base_batch_size')
    parser.add_argument('--no-validate', action='store_true', help='do not evaluate during training')
    add_common_args(parser)
    return parse_common(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isfile(args.config):
        sys.exit(f'error: config not found: {args.config}')
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    if args.amp:
        import torch
        if not torch.cuda.is_available():
            sys.exit('--amp needs a CUDA GPU (mmengine AmpOptimWrapper); run without --amp on CPU')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.resume == 'auto':  # the newest complete checkpoint in the work dir; none: train from the start
        cfg.resume, cfg.load_from = True, latest_checkpoint(cfg.work_dir)
    elif args.resume is not None:
        if not os.path.isfile(args.resume):
            sys.exit(f'--resume: checkpoint not found: {args.resume}')
        cfg.resume, cfg.load_from = True, args.resume
    try:
        if args.auto_scale_lr:
            enable_auto_scale_lr(cfg)
        if args.no_validate:
            disable_validation(cfg)
        prepare(cfg, loaders=('train_dataloader',) if args.no_validate else ('train_dataloader', 'val_dataloader'))
    except (ValueError, DatasetNotFoundError) as error:
        sys.exit(f'error: {error}')
    if args.check_only:
        return
    with missing_files_reported(), destroy_process_group_on_success():
        runner = build_runner(cfg)
        runner.register_hook(TrainSetupLogger())
        runner.train()


if __name__ == '__main__':
    main()
