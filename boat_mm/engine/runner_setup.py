"""What ``tools/train.py`` and ``tools/test.py`` share: config loading and the adaptations that let one
config run on a GPU cluster, a CPU-only laptop or CI, with clear errors when data is missing.

The config's ``default_scope`` (mmpretrain, mmdet or mmseg) decides which toolbox runs it.
"""
import glob
import os
import os.path as osp
import re
import sys
from contextlib import contextmanager
from typing import List, Optional

import torch
from mmengine.config import Config, ConfigDict, DictAction  # noqa: F401  (DictAction re-exported)

from ..utils.datasets import check_datasets
from ..utils.model_builder import replace_sync_bn
from ..utils.setup_env import RETAIN_ENV, enable_cpu_distributed, retain_freed_memory
from .optimizers.cpu_amp_optim_wrapper import CPU_AMP_DTYPES, CPUAmpOptimWrapper

__all__ = ['add_common_args', 'parse_common', 'load_config', 'adapt_cfg_to_device', 'amp_on_cpu', 'build_runner',
           'prepare', 'enable_auto_scale_lr', 'disable_validation', 'latest_checkpoint', 'missing_files_reported',
           'destroy_process_group_on_success']


def add_common_args(parser) -> None:
    """The options ``tools/train.py`` and ``tools/test.py`` share (mmengine's conventions)."""
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default work_dirs/<config>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys, k=v')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    parser.add_argument('--check-only', action='store_true',
                        help='check the config, checkpoint and data, then exit (0 if all is there); the dist_*'
                             ' and slurm_* scripts run this once before starting their processes, so that'
                             ' missing data gives one message instead of one per process')


def parse_common(parser, argv=None):
    """Parse, and export LOCAL_RANK for launchers that pass it as an argument."""
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def load_config(config: str, cfg_options: Optional[dict] = None, work_dir: Optional[str] = None,
                launcher: str = 'none') -> Config:
    """Read a config, merge ``--cfg-options``, set the work dir (default ``work_dirs/<config name>``)."""
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg


# The names mmengine's CheckpointHook gives the regular (not best_*) checkpoints of a run.
_RUN_CHECKPOINT = re.compile(r'(?:iter|epoch)_(\d+)\.pth')


def latest_checkpoint(work_dir: str) -> Optional[str]:
    """The newest complete checkpoint of the run in ``work_dir``, or None: what ``--resume`` continues from.

    mmengine's own choice is the path in ``work_dir/last_checkpoint``, which its CheckpointHook writes *after*
    the checkpoint: a job killed between the two resumes one interval too early and repeats that work. Every
    local save of boat_mm is atomic (``utils.file_io``), so each ``iter_N.pth`` / ``epoch_N.pth`` present is
    complete, and the newest of them (by modification time, then by N) is the one to continue from.
    """
    candidates = []
    for path in glob.glob(osp.join(glob.escape(work_dir), '*.pth')):
        match = _RUN_CHECKPOINT.fullmatch(osp.basename(path))
        if match:
            candidates.append((osp.getmtime(path), int(match.group(1)), path))
    recorded = osp.join(work_dir, 'last_checkpoint')
    if not candidates and osp.isfile(recorded):
        with open(recorded) as f:
            named = f.read().strip()
        return named if named and osp.isfile(named) else None
    return max(candidates)[2] if candidates else None


def adapt_cfg_to_device(cfg: Config) -> List[str]:
    """Make a GPU config runnable where there is no CUDA; returns what was changed (for the log).

    - SyncBN has no CPU kernel: SyncBN -> BN in the model.
    - Distributed runs use the gloo backend and DDP without ``device_ids``.
    - The process keeps freed memory for reuse (``boat_mm.utils.setup_env``, glibc only).
    - bf16 ``AmpOptimWrapper`` (the ``*_amp-bf16.py`` configs) -> ``CPUAmpOptimWrapper`` (the same autocast, no
      loss scaler); fp16 needs CUDA's loss scaler: a ValueError that says so.
    """
    if torch.cuda.is_available():
        return []
    enable_cpu_distributed()
    changes = []
    allocator = retain_freed_memory()
    if allocator:
        changes.append(f'{allocator}; {RETAIN_ENV}=0 to keep the defaults')
    amp = amp_on_cpu(cfg)
    if amp:
        changes.append(amp)
    replaced = replace_sync_bn(cfg.model)
    if replaced:
        changes.append(f'SyncBN -> BN in {replaced} place(s) (no CUDA)')
    if cfg.get('launcher', 'none') != 'none':
        cfg.setdefault('env_cfg', ConfigDict())
        cfg.env_cfg.setdefault('dist_cfg', ConfigDict())
        cfg.env_cfg.dist_cfg.backend = 'gloo'
        wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(type='MMDistributedDataParallel')
        wrapper['device_ids'] = None  # an explicit None stops the Runner adding [LOCAL_RANK]
        wrapper.setdefault('broadcast_buffers', False)
        wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
        cfg.model_wrapper_cfg = wrapper
        changes.append('distributed on CPU: gloo backend, DDP without device_ids')
    return changes


def amp_on_cpu(cfg: Config) -> Optional[str]:
    """A bf16 ``AmpOptimWrapper`` -> ``CPUAmpOptimWrapper`` in ``cfg`` (in place), for a run without CUDA;
    returns the change for the log (None: no AMP). fp16 needs CUDA's loss scaler: a ValueError."""
    wrapper = cfg.get('optim_wrapper')
    if not wrapper or wrapper.get('type') != 'AmpOptimWrapper':
        return None
    dtype = str(wrapper.get('dtype') or 'float16').replace('torch.', '')  # AmpOptimWrapper's default: float16
    if dtype not in CPU_AMP_DTYPES:
        raise ValueError(f'{dtype} mixed precision (AmpOptimWrapper) needs a CUDA GPU for its loss scaler; '
                         f'without one, train in {" or ".join(CPU_AMP_DTYPES)} (the *_amp-bf16.py configs) or fp32')
    wrapper.type = CPUAmpOptimWrapper.__name__
    return f'AmpOptimWrapper ({dtype}) -> {CPUAmpOptimWrapper.__name__} (no CUDA: {dtype} autocast on the CPU)'


def build_runner(cfg: Config):
    """An mmengine Runner (or the config's ``runner_type``) for a prepared config."""
    from mmengine.dist import get_backend, get_rank, get_world_size
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    if runner.distributed and get_rank() == 0:
        print(f'[boat_mm] distributed: world size {get_world_size()}, backend {get_backend()}')
    return runner


def prepare(cfg: Config, loaders) -> None:
    """Device adaptation and dataset checks, with what changed printed once (rank 0)."""
    for change in adapt_cfg_to_device(cfg):
        if int(os.environ.get('RANK', '0')) == 0:
            print(f'[boat_mm] {change}')
    check_datasets(cfg, loaders)


def enable_auto_scale_lr(cfg: Config) -> None:
    """``--auto-scale-lr`` (mmdet / mmpretrain meaning): mmengine's Runner multiplies every learning rate by
    (processes x per-GPU batch) / ``auto_scale_lr.base_batch_size``, the total batch the config's rate is for."""
    base = (cfg.get('auto_scale_lr') or {}).get('base_batch_size')
    if not base:
        raise ValueError('--auto-scale-lr: the config declares no auto_scale_lr.base_batch_size (the total '
                         'batch its learning rate was set for), e.g. auto_scale_lr = dict(base_batch_size=16)')
    cfg.auto_scale_lr.enable = True


def disable_validation(cfg: Config) -> None:
    """``--no-validate`` (mmpretrain meaning): no validation loop, dataloader or evaluator during training."""
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    checkpoint = cfg.get('default_hooks', {}).get('checkpoint')
    if checkpoint is not None and checkpoint.get('save_best'):
        checkpoint.save_best = None  # nothing to rank checkpoints by


@contextmanager
def missing_files_reported():
    """A file missing mid-run (an image or label map named by an annotation, a checkpoint) ends the run
    with one line naming it, not a stack trace from deep inside a transform."""
    try:
        yield
    except FileNotFoundError as error:
        path = error.filename or str(error)
        sys.exit(f'error: file not found: {path}\n  (named by the dataset annotations or the config; '
                 'check the data root and the annotation files)')


@contextmanager
def destroy_process_group_on_success():
    """Tear the distributed process group down once the block has finished without error.

    mmengine's Runner leaves the process group to the interpreter's exit; gloo's worker threads then still
    hold work objects with Python references while the interpreter is finalised, and a rank can abort with
    "terminate called without an active exception" (exit -6) after a training that succeeded. Destroying the
    group while the interpreter is alive ends those threads first. After an error the group is left alone:
    destroying it while other ranks still wait in a collective could hang them instead of failing."""
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
