"""Whole-model speed and memory of a config, as its task runs it (``tools/analysis_tools/benchmark.py``).

- Inference: images per second through the whole model (classifier / segmentor / detector, ``predict``
  mode, data preprocessor included), on images that went through the config's own test pipeline, i.e. at the
  test input size the config uses (e.g. ADE20K 2048x512 keep-ratio resize, COCO 1333x800).
- Training: seconds and peak memory of one ``train_step`` (forward, backward, optimiser step) at the config's
  train pipeline (crop) and per-GPU batch size, with the config's optimiser.

Images are real-format demo data (``boat_mm.testing.demo_data``: JPEGs with annotations in the ImageNet / COCO /
ADE20K layouts) written at a realistic photo size into a temporary directory; the configs' dataset
definitions read them with data_root pointed there. Nothing is downloaded.
"""
import os.path as osp
import statistics
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

from ..testing.demo_data import DEMO_CLASSES, make_ade20k, make_coco, make_imagenet
from ..utils.datasets import innermost_dataset
from ..utils.machine import machine_description
from ..utils.model_builder import build_model
from ..utils.progress import phase
from ..utils.tables import markdown_table

__all__ = ['ModelSpeed', 'peak_memory_mb', 'measure_all', 'measure', 'profile_train_step', 'speed_table',
           'describe_machine']

# Photo sizes (H, W) of the generated images: typical of each dataset (ADE20K / COCO are about 512x683 and
# 480x640 on average; ImageNet images are resized before the 224 crop anyway).
DEMO_IMAGE_SIZES = {'mmseg': (512, 683), 'mmdet': (480, 640), 'mmpretrain': (375, 500)}
# Images generated per split: enough for a training batch of the largest per-GPU batch in our configs (64)
# would be wasteful on a CPU; the train loader cycles over these.
DEMO_IMAGES = 4
PROGRESS_TOOL = 'benchmark'


@dataclass
class ModelSpeed:
    """One config's measurements; ``None`` where not measured."""
    config: str
    test_input: str  # input shape after the test pipeline, e.g. '3x512x683'
    images_per_second: float
    train_input: str  # batch x shape of a training step after the data preprocessor, e.g. '2x3x512x512'
    train_step_seconds: Optional[float]
    peak_train_memory_mb: Optional[float]


def _write_demo_data(scope: str, root: str) -> str:
    size = DEMO_IMAGE_SIZES[scope]
    if scope == 'mmseg':
        make_ade20k(root, num_train=DEMO_IMAGES, num_val=DEMO_IMAGES, size=size)
    elif scope == 'mmdet':
        make_coco(root, num_train=DEMO_IMAGES, num_val=DEMO_IMAGES, size=size)
    else:
        make_imagenet(root, num_train=DEMO_IMAGES, num_val=DEMO_IMAGES, size=min(size))
    return root


def _point_at_demo_data(dataset_cfg, scope: str, root: str) -> None:
    """Use the config's own dataset definition, reading the demo data."""
    dataset_cfg.data_root = root
    if scope == 'mmdet':  # the demo classes, so that training images keep their instances
        dataset_cfg.metainfo = dict(classes=DEMO_CLASSES)


def _dataset(loader_cfg, scope: str, root: str):
    import importlib

    dataset_cfg = innermost_dataset(loader_cfg.dataset).copy()  # RepeatDataset and friends: the inner one
    _point_at_demo_data(dataset_cfg, scope, root)
    return importlib.import_module(f'{scope}.registry').DATASETS.build(dataset_cfg)


def _interleaved_medians(fns: List[Callable[[], object]], iters: int,
                        synchronize: Callable[[], None]) -> List[float]:
    """Median time of each function over ``iters`` rounds that run them in turn (A B A B ...), after one
    warm-up each (first-call allocations, kernel builds): a machine whose speed drifts (a shared host,
    another job) slows every config alike instead of whichever happened to be measured during it."""
    for fn in fns:
        fn()
    times: List[List[float]] = [[] for _ in fns]
    for _ in range(iters):
        for fn, own in zip(fns, times):
            synchronize()
            start = time.perf_counter()
            fn()
            synchronize()
            own.append(time.perf_counter() - start)
    return [statistics.median(own) for own in times]


def peak_memory_mb(fn: Callable[[], object], device: str = 'cpu') -> float:
    """Peak memory of one ``fn()`` call: CUDA allocator peak, or on CPU the profiler's allocation peak
    (also used by the benchmark scripts, benchmarks/common.py).

    On CPU each profiler event's *self* allocations are summed in time order: an op's total
    (``cpu_memory_usage``) includes the ops it calls, which are events of their own, so totals would count
    nested allocations twice (``aten::linear`` and its ``aten::addmm``)."""
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        fn()
        return torch.cuda.max_memory_allocated() / 2 ** 20
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak / 2 ** 20


class _Prepared:
    """One config built for measurement: its model, a test sample and a training batch from the config's
    own pipelines, and its optimiser."""

    def __init__(self, config: str, checkpoint: Optional[str], device: str, root: str, train: bool,
                 train_batch: Optional[int] = None):
        from mmengine.dataset import pseudo_collate
        from mmengine.optim import build_optim_wrapper
        self.config = config
        cfg, self.model = build_model(config, checkpoint, device)
        scope = cfg.get('default_scope', 'mmpretrain')
        data_root = osp.join(root, scope)
        if not osp.isdir(data_root):
            _write_demo_data(scope, data_root)
        self.sample = pseudo_collate([_dataset(cfg.test_dataloader, scope, data_root)[0]])
        self.batch = self.wrapper = None
        if train:
            train_set = _dataset(cfg.train_dataloader, scope, data_root)
            batch_size = train_batch or cfg.train_dataloader.batch_size
            self.batch = pseudo_collate([train_set[i % len(train_set)] for i in range(batch_size)])
            if device == 'cpu':  # a bf16 AMP config trains with CPU autocast, as tools/train.py runs it
                from ..engine.runner_setup import amp_on_cpu
                amp_on_cpu(cfg)
            self.wrapper = build_optim_wrapper(self.model, cfg.optim_wrapper)

    def predict(self) -> None:
        self.model.eval()
        with torch.no_grad():
            self.model.test_step(self.sample)

    def train_step(self) -> None:
        self.model.train()
        self.model.train_step(self.batch, self.wrapper)

    def train_input(self) -> str:
        with torch.no_grad():  # the batch as the model sees it: after the data preprocessor's padding
            return 'x'.join(map(str, self.model.data_preprocessor(self.batch, True)['inputs'].shape))


def measure_all(configs: List[str], checkpoints: Optional[List[Optional[str]]] = None, device: str = 'cpu',
                iters: int = 3, train: bool = True, train_batch: Optional[int] = None,
                progress: bool = False) -> List[ModelSpeed]:
    """Measure configs side by side (random weights unless a checkpoint is given); see the module docstring.
    All models are built first, then every measurement round runs each config in turn, so that ratios
    between them come from the same moments of the run. ``train_batch`` replaces the configs' per-GPU batch
    (small test runs); ``progress`` prints a line per phase on stderr (``boat_mm.utils.progress``)."""
    checkpoints = checkpoints or [None] * len(configs)
    synchronize = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    step = phase if progress else (lambda what, tool=None: nullcontext())
    with tempfile.TemporaryDirectory() as root:
        prepared = []
        for config, checkpoint in zip(configs, checkpoints):
            with step(f'building {osp.basename(config)} and its demo data', PROGRESS_TOOL):
                prepared.append(_Prepared(config, checkpoint, device, root, train, train_batch))
        with step(f'inference: {iters} interleaved round(s) after a warm-up', PROGRESS_TOOL):
            seconds = _interleaved_medians([p.predict for p in prepared], iters, synchronize)
        results = [ModelSpeed(p.config, 'x'.join(map(str, p.sample['inputs'][0].shape)), 1.0 / t, '-', None, None)
                   for p, t in zip(prepared, seconds)]
        if train:
            with step(f'training steps: {iters} interleaved round(s) after a warm-up', PROGRESS_TOOL):
                step_seconds = _interleaved_medians([p.train_step for p in prepared], iters, synchronize)
            with step('peak memory of one training step each (profiled)', PROGRESS_TOOL):
                for p, result, seconds_per_step in zip(prepared, results, step_seconds):
                    result.train_step_seconds = seconds_per_step
                    result.peak_train_memory_mb = peak_memory_mb(p.train_step, device)
                    result.train_input = p.train_input()
    return results


def measure(config: str, checkpoint: Optional[str] = None, device: str = 'cpu', iters: int = 3,
            train: bool = True) -> ModelSpeed:
    """Measure one config (random weights unless ``checkpoint``); see the module docstring."""
    return measure_all([config], [checkpoint], device, iters, train)[0]


def profile_train_step(config: str, device: str = 'cpu', train_batch: Optional[int] = None,
                       warmup: int = 2) -> Dict[str, float]:
    """Self time (ms) of every op in one profiled training step of ``config``, and under ``'step'`` the step's
    wall time; ``warmup`` steps first fault in the memory the step keeps reusing. Time spent outside aten ops
    (e.g. the native clustering kernel) is the step's time less the sum of the ops'."""
    from torch.profiler import ProfilerActivity, profile
    with tempfile.TemporaryDirectory() as root:
        prepared = _Prepared(config, None, device, root, True, train_batch)
        for _ in range(warmup):
            prepared.train_step()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == 'cuda' else [])
        start = time.perf_counter()
        with profile(activities=activities) as prof:
            prepared.train_step()
        step = time.perf_counter() - start
    times = {event.key: event.self_cpu_time_total / 1e3 for event in prof.key_averages()}
    times['step'] = step * 1e3
    return times


def speed_table(results: List[ModelSpeed], baseline: Optional[ModelSpeed] = None) -> str:
    """Markdown table, one row per config; with ``baseline``, ratios to it (same run)."""
    columns = ['config', 'test input', 'images/s', 'train batch', 'train step s', 'peak train MB']
    if baseline is not None:
        columns += ['time ratio (inference)', 'time ratio (train step)', 'memory ratio']
    rows = []

    def fmt(value, digits):
        return '-' if value is None else f'{value:.{digits}f}'
    for r in results:
        cells = [osp.basename(r.config), r.test_input, fmt(r.images_per_second, 3), r.train_input,
                 fmt(r.train_step_seconds, 2), fmt(r.peak_train_memory_mb, 0)]
        if baseline is not None:
            cells += [fmt(baseline.images_per_second / r.images_per_second, 2),
                      fmt(r.train_step_seconds / baseline.train_step_seconds
                          if r.train_step_seconds and baseline.train_step_seconds else None, 2),
                      fmt(r.peak_train_memory_mb / baseline.peak_train_memory_mb
                          if r.peak_train_memory_mb and baseline.peak_train_memory_mb else None, 2)]
        rows.append(cells)
    return markdown_table(rows, columns)


def describe_machine(device: str) -> Dict[str, str]:
    """The machine line of the table header (``boat_mm.utils.machine.machine_description``)."""
    return dict(device=machine_description(device))
