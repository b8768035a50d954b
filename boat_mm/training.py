"""What ``tools/train.py`` and ``tools/test.py`` share: config loading and the adaptations that let one
config run on a GPU cluster, a CPU-only laptop or CI, with clear errors when data is missing.

The config's ``default_scope`` (mmpretrain, mmdet or mmseg) decides which toolbox runs it.
"""
import os
import os.path as osp
import sys
from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple

import torch
from mmengine.config import Config, ConfigDict, DictAction  # noqa: F401  (DictAction re-exported)
from mmengine.hooks import Hook

__all__ = ['add_common_args', 'parse_common', 'build_model_without_weights', 'load_config', 'adapt_cfg_to_device',
           'check_datasets', 'DatasetNotFoundError', 'build_runner', 'prepare', 'enable_auto_scale_lr',
           'disable_validation', 'TrainSetupLogger', 'describe_train_setup', 'missing_files_reported',
           'destroy_process_group_on_success']

# How to get the real data, per toolbox scope.
_DATA_HELP = {
    'mmpretrain': 'ImageNet-1K from https://image-net.org (train/ and val/ class folders, meta/*.txt)',
    'mmdet': 'COCO 2017 from https://cocodataset.org (train2017/, val2017/, annotations/instances_*.json)',
    'mmseg': 'ADE20K (ADEChallengeData2016) from http://sceneparsing.csail.mit.edu '
             '(images/ and annotations/ with training/ and validation/)',
}
_DEMO_CONFIGS = {
    'mmpretrain': 'configs/demo/cls_boat_swin_imagenet_demo.py',
    'mmdet': 'configs/demo/mask-rcnn_boat_swin_coco_demo.py',
    'mmseg': 'configs/demo/upernet_boat_cswin_ade20k_demo.py',
}


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


class DatasetNotFoundError(FileNotFoundError):
    """A dataset path named by the config does not exist."""


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


def _replace_sync_bn(node) -> int:
    """Turn every ``type='SyncBN'`` norm config into ``BN`` in place; returns how many."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += _replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _replace_sync_bn(value)
    return count


def build_model_without_weights(config: str):
    """(cfg, model) for a single-process analysis tool: the config's toolbox scope, no backbone
    ``init_cfg`` (the caller loads weights, if any), SyncBN as BN (no process group needed), eval mode."""
    from mmengine.registry import init_default_scope

    from .registry import toolbox_models
    cfg = Config.fromfile(config)
    scope = cfg.get('default_scope', 'mmpretrain')
    init_default_scope(scope)
    if cfg.get('data_preprocessor') is not None:  # as mmengine's Runner: the top-level one is the default
        cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    _replace_sync_bn(cfg.model)
    cfg.model.get('backbone', {}).pop('init_cfg', None)
    model = toolbox_models(scope).build(cfg.model)
    model.eval()  # (some toolbox modules' train() returns None, so no chaining)
    return cfg, model


def adapt_cfg_to_device(cfg: Config) -> List[str]:
    """Make a GPU config runnable where there is no CUDA; returns what was changed (for the log).

    - SyncBN has no CPU kernel: SyncBN -> BN in the model.
    - Distributed runs use the gloo backend and DDP without ``device_ids``.
    - The process keeps freed memory for reuse (``boat_mm.cpu_memory``, glibc only).
    """
    if torch.cuda.is_available():
        return []
    from .compat import enable_cpu_distributed
    from .cpu_memory import RETAIN_ENV, retain_freed_memory
    enable_cpu_distributed()
    changes = []
    allocator = retain_freed_memory()
    if allocator:
        changes.append(f'{allocator}; {RETAIN_ENV}=0 to keep the defaults')
    replaced = _replace_sync_bn(cfg.model)
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


def _datasets(node) -> Iterator[dict]:
    """Leaf dataset configs (unwrapping RepeatDataset, ConcatDataset, ClassBalancedDataset...)."""
    if not isinstance(node, dict):
        return
    if 'datasets' in node:
        for child in node['datasets']:
            yield from _datasets(child)
    elif isinstance(node.get('dataset'), dict):
        yield from _datasets(node['dataset'])
    else:
        yield node


def _expected_paths(dataset: dict) -> List[Tuple[str, str]]:
    root = dataset.get('data_root') or ''
    paths = []
    if root:
        paths.append(('data_root', root))
    ann_file = dataset.get('ann_file')
    if ann_file:
        paths.append(('ann_file', ann_file if osp.isabs(ann_file) else osp.join(root, ann_file)))
    prefix = dataset.get('data_prefix')
    prefixes = prefix.values() if isinstance(prefix, dict) else [prefix] if isinstance(prefix, str) else []
    for value in prefixes:
        if isinstance(value, str) and value:
            paths.append(('data_prefix', value if osp.isabs(value) else osp.join(root, value)))
    return paths


def check_datasets(cfg: Config, loaders=('train_dataloader', 'val_dataloader', 'test_dataloader')) -> None:
    """Fail early, naming the missing path and how to get data, instead of deep inside a dataset."""
    scope = cfg.get('default_scope', 'mmengine')
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not loader_cfg or 'dataset' not in loader_cfg:
            continue
        for dataset in _datasets(loader_cfg['dataset']):
            for kind, path in _expected_paths(dataset):
                if not osp.exists(path):
                    raise DatasetNotFoundError(
                        f'{loader}: the {dataset.get("type", "dataset")} {kind} {path!r} does not exist.\n'
                        f'  Get the real data: {_DATA_HELP.get(scope, "see the toolbox docs")}, and put it '
                        f'there (or pass --cfg-options {loader}.dataset.data_root=/your/path).\n'
                        f'  Or try the demo data: python tools/make_demo_data.py data/demo && '
                        f'python tools/train.py {_DEMO_CONFIGS.get(scope, "configs/demo/...")}')


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


class TrainSetupLogger(Hook):
    """Logs, when training starts, the total batch and the learning rate the optimizer really starts from
    (after ``--auto-scale-lr``, before warm-up factors), so that every run's log says both."""
    priority = 'VERY_LOW'

    def before_train(self, runner) -> None:
        runner.logger.info(describe_train_setup(runner))


def describe_train_setup(runner) -> str:
    """'total batch 4 (2 processes x 2), base batch 16, lr 5e-05 (scaled by 0.25)' for the train log."""
    per_gpu = runner.cfg.train_dataloader.batch_size  # the built loader's is None under a batch sampler (mmdet)
    total = runner.world_size * per_gpu
    scaling = runner.auto_scale_lr or {}
    base = scaling.get('base_batch_size')
    wrappers = runner.optim_wrapper.values() if hasattr(runner.optim_wrapper, 'values') else [runner.optim_wrapper]
    rates = sorted({group.get('initial_lr', group['lr']) for wrapper in wrappers
                    for group in wrapper.optimizer.param_groups})
    lr = ', '.join(f'{rate:.6g}' for rate in rates)
    processes = f'{runner.world_size} process' + ('es' if runner.world_size > 1 else '')
    text = f'total batch {total} ({processes} x {per_gpu}), learning rate {lr}'
    if base:
        text += f', config base batch {base}'
        text += (f' (auto-scaled by {total / base:.6g})' if scaling.get('enable')
                 else ' (not scaled: --auto-scale-lr scales it)')
    return text


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
