"""Read finished mmengine runs (work dirs) and compare them: final and best metrics, params, FLOPs, training
time, loss and metric curves. Used by ``tools/analysis_tools/compare_runs.py``.

A work dir is what ``tools/train.py`` writes: the dumped config ``<work_dir>/<name>.py`` and one
``<work_dir>/<timestamp>/vis_data/scalars.json`` per start (a resumed run has several), one JSON object per
line: training lines carry ``loss`` and ``iter`` (averages over the logging interval, ``time`` in seconds per
iteration), validation lines the evaluator's metrics and ``step``.
"""
import glob
import json
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..utils.tables import markdown_table

__all__ = ['Run', 'load_run', 'comparison_table', 'plot_curves']

# The metric a run is judged by, per toolbox; the first one a run logged is used.
PRIMARY_METRICS = ('mIoU', 'coco/segm_mAP', 'coco/bbox_mAP', 'accuracy/top1')
# Metrics reported when present (higher is better for all of them).
REPORTED_METRICS = ('mIoU', 'mAcc', 'aAcc', 'coco/bbox_mAP', 'coco/segm_mAP', 'accuracy/top1', 'accuracy/top5')


@dataclass
class Run:
    """One work dir: its training curve, its validations, and where it came from."""
    work_dir: str
    config: Optional[str]
    train: List[dict] = field(default_factory=list)  # training lines, by iteration
    val: List[dict] = field(default_factory=list)  # validation lines, by step

    @property
    def name(self) -> str:
        return osp.basename(osp.normpath(self.work_dir))

    @property
    def metrics(self) -> List[str]:
        return [m for m in REPORTED_METRICS if any(m in line for line in self.val)]

    @property
    def primary_metric(self) -> Optional[str]:
        return next((m for m in PRIMARY_METRICS if any(m in line for line in self.val)), None)

    def final(self, metric: str) -> Optional[float]:
        values = [line[metric] for line in self.val if metric in line]
        return values[-1] if values else None

    def best(self, metric: str) -> Optional[Tuple[float, int]]:
        points = [(line[metric], line['step']) for line in self.val if metric in line]
        return max(points) if points else None

    def iterations(self) -> int:
        return self.train[-1]['iter'] if self.train else 0

    def training_seconds(self) -> float:
        """Sum over logging intervals of seconds per iteration x iterations in the interval."""
        total, previous = 0.0, 0
        for line in self.train:
            total += line.get('time', 0.0) * (line['iter'] - previous)
            previous = line['iter']
        return total


def _scalar_files(work_dir: str) -> List[str]:
    return sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))


def load_run(work_dir: str) -> Run:
    """Read a work dir; raise FileNotFoundError naming what is missing."""
    if not osp.isdir(work_dir):
        raise FileNotFoundError(f'work dir not found: {work_dir}')
    files = _scalar_files(work_dir)
    if not files:
        raise FileNotFoundError(f'no <timestamp>/vis_data/scalars.json in {work_dir}: not an mmengine work dir, '
                                'or the run logged nothing yet')
    configs = sorted(glob.glob(osp.join(work_dir, '*.py')))
    run = Run(work_dir, configs[0] if configs else None)
    by_iter: Dict[int, dict] = {}
    by_step: Dict[int, dict] = {}
    for path in files:  # later starts (resumes) overwrite the lines they repeat
        with open(path) as scalars:
            for text in scalars:
                line = json.loads(text)
                if 'loss' in line and 'iter' in line:
                    by_iter[line['iter']] = line
                elif 'step' in line and any(m in line for m in REPORTED_METRICS):
                    by_step[line['step']] = line
    run.train = [by_iter[i] for i in sorted(by_iter)]
    run.val = [by_step[s] for s in sorted(by_step)]
    return run


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def comparison_table(runs: List[Run], complexity: Dict[str, dict]) -> str:
    """Markdown table, one row per run: final and best of every reported metric, params, FLOPs, iterations
    and training time. ``complexity`` maps a work dir to ``complexity_of_config``'s result (may be empty)."""
    metrics = [m for m in REPORTED_METRICS if any(m in run.metrics for run in runs)]
    columns = ['run'] + [f'{m} final' for m in metrics] + [f'{m} best (step)' for m in metrics]
    columns += ['params (M)', 'FLOPs (G)', 'iterations', 'training time (s)']
    rows = []
    for run in runs:
        stats = complexity.get(run.work_dir, {})
        best = [run.best(m) for m in metrics]
        cells = [run.name] + [_fmt(run.final(m)) for m in metrics]
        cells += ['-' if b is None else f'{b[0]:.2f} ({b[1]})' for b in best]
        cells += [_fmt(stats['params'] / 1e6) if stats else '-',
                  f'{stats["flops"] / 1e9:.2f} @ {stats["shape"][0]}x{stats["shape"][1]}' if stats else '-',
                  str(run.iterations()), f'{run.training_seconds():.0f}']
        rows.append(cells)
    return markdown_table(rows, columns)


def plot_curves(runs: List[Run], out_dir: str) -> List[str]:
    """``loss.png`` (training loss against iteration) and, when the runs share a primary metric,
    ``<metric>.png`` (against step), one line per run; returns the files written."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    written = []
    figure, axes = plt.subplots(figsize=(6, 4))
    for run in runs:
        axes.plot([line['iter'] for line in run.train], [line['loss'] for line in run.train], label=run.name)
    axes.set(xlabel='iteration', ylabel='training loss', title='Training loss')
    axes.legend()
    figure.tight_layout()
    path = osp.join(out_dir, 'loss.png')
    figure.savefig(path, dpi=120)
    plt.close(figure)
    written.append(path)
    metric = runs[0].primary_metric
    if metric and all(run.primary_metric == metric for run in runs):
        figure, axes = plt.subplots(figsize=(6, 4))
        for run in runs:
            points = [(line['step'], line[metric]) for line in run.val if metric in line]
            axes.plot(*zip(*points), marker='o', label=run.name)
        axes.set(xlabel='iteration (or epoch)', ylabel=metric, title=f'Validation {metric}')
        axes.legend()
        figure.tight_layout()
        path = osp.join(out_dir, metric.replace('/', '_') + '.png')
        figure.savefig(path, dpi=120)
        plt.close(figure)
        written.append(path)
    return written
