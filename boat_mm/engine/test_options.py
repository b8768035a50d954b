"""What ``tools/test.py`` adds to a config, with the meaning each toolbox's own ``tools/test.py`` gives it:

- ``--tta``: test-time augmentation. The config's ``tta_model`` wraps its model and ``tta_pipeline`` replaces
  the test pipeline (mmseg: multi-scale + flip ``SegTTAModel`` inherited from mmseg's ADE20K base; mmdet:
  ``configs/_base_/mask-rcnn_tta.py``; mmpretrain: flip TTA built from the test pipeline, as mmpretrain does
  when a config has none).
- ``--out``: predictions written out (mmdet: pickle of results + COCO json files next to it; mmseg: one label
  PNG per image in a directory; mmpretrain: pickle of results).
- ``--show-dir``: the toolbox's visualizer draws every test image's prediction into a directory.
"""
import copy
import glob
import os.path as osp
from math import prod
from typing import List

from mmengine.config import Config, ConfigDict

from ..utils.datasets import innermost_dataset

__all__ = ['evaluation_only', 'use_tta', 'tta_views', 'configure_outputs', 'attach_result_dumpers',
           'configure_show_dir', 'pictures_in', 'count_forward_passes']

# Where each toolbox writes pictures under --show-dir (a glob below the directory).
_PICTURES = {'mmdet': '*.*', 'mmseg': osp.join('vis_data', 'vis_image', '*.png'), 'mmpretrain': '*.png'}


# What only training reads (mmengine's Runner wants train_dataloader, train_cfg and optim_wrapper all set or all None).
_TRAINING_PARTS = ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler')


def evaluation_only(cfg: Config) -> None:
    """Drop the training parts of ``cfg`` in place, so that evaluating never builds the training set.

    mmengine's ``Runner.iter`` (read by mmseg's visualization hook for every drawn picture) builds the train
    loop, and with it the training dataset, whenever the config defines one: ``--show-dir`` then failed on a
    machine that holds only the test data. Without a train loop ``Runner.iter`` is 0, the value a test run
    has anyway (a checkpoint is loaded, not resumed)."""
    for key in _TRAINING_PARTS:
        cfg[key] = None


def _default_flip_tta(cfg: Config) -> None:
    """mmpretrain's default when a config has no TTA: average the scores of the image and its mirror."""
    test_pipeline = innermost_dataset(cfg.test_dataloader.dataset).pipeline
    cfg.setdefault('tta_model', dict(type='AverageClsScoreTTA'))
    if 'tta_pipeline' not in cfg:
        flips = [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)]
        flip = dict(type='TestTimeAug', transforms=[flips, [test_pipeline[-1]]])
        cfg.tta_pipeline = copy.deepcopy(test_pipeline[:-1]) + [flip]


def tta_views(pipeline: List[dict]) -> int:
    """Views per image a TTA pipeline makes: the product of the option counts of its ``TestTimeAug``."""
    return prod(len(options) for step in pipeline if step.get('type') == 'TestTimeAug'
                for options in step['transforms'])


def use_tta(cfg: Config) -> str:
    """Switch ``cfg`` to test-time augmentation in place; returns a one-line description for the log."""
    scope = cfg.get('default_scope', 'mmpretrain')
    if scope == 'mmpretrain':
        _default_flip_tta(cfg)
    missing = [key for key in ('tta_model', 'tta_pipeline') if key not in cfg]
    if missing:
        raise ValueError(f'--tta: the config defines no {" / ".join(missing)}; add them (see '
                         'configs/_base_/mask-rcnn_tta.py, or mmseg\'s _base_/datasets/ade20k.py)')
    dataset = innermost_dataset(cfg.test_dataloader.dataset)
    dataset.pipeline = cfg.tta_pipeline
    if dataset.get('batch_shapes_cfg') is not None:  # mmdet: fixed batch shapes do not apply to TTA views
        dataset.batch_shapes_cfg = None
    module = cfg.model
    tta_model = ConfigDict(**copy.deepcopy(cfg.tta_model), module=module)
    if module.get('data_preprocessor') is not None:
        # The Runner gives a model without one the config's top-level data_preprocessor, and the TTA wrapper
        # hands its own to the wrapped model: pass the model's own so that it is not replaced.
        tta_model.data_preprocessor = module.data_preprocessor
    cfg.model = tta_model
    return f'test-time augmentation: {tta_model.type}, {tta_views(cfg.tta_pipeline)} views per image'


def _evaluators(cfg: Config) -> List[dict]:
    evaluator = cfg.get('test_evaluator')
    return list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator] if evaluator else []


def configure_outputs(cfg: Config, out: str) -> str:
    """Set up ``--out`` in the config (before the Runner is built); returns where predictions will be."""
    scope = cfg.get('default_scope', 'mmpretrain')
    if scope == 'mmseg':
        for evaluator in _evaluators(cfg):
            evaluator['output_dir'] = out
            evaluator['keep_results'] = True
        return f'one label PNG per image in {out}/'
    if not out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out: {scope} writes a pickle; give a .pkl path, got {out!r}')
    if scope == 'mmdet':
        prefix = osp.splitext(out)[0]
        coco = [e for e in _evaluators(cfg) if e.get('type', '').endswith('CocoMetric')]
        for evaluator in coco:
            evaluator['outfile_prefix'] = prefix
        if coco:
            return f'results in {out}, COCO json in {prefix}.bbox.json / {prefix}.segm.json'
    return f'results in {out}'


def attach_result_dumpers(runner, scope: str, out: str) -> None:
    """``--out`` part two (after the Runner is built): the pickle dumper joins the test metrics."""
    if scope == 'mmseg':
        return
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults  # encodes masks as RLE, as mmdet's own --out
        dumper = DumpDetResults(out_file_path=out)
    else:
        from mmengine.evaluator import DumpResults
        dumper = DumpResults(out_file_path=out)
    runner.test_evaluator.metrics.append(dumper)


def configure_show_dir(cfg: Config, show_dir: str) -> str:
    """``--show-dir``: every test image drawn by the toolbox's visualization hook; returns the glob of the
    pictures (mmseg's visualizer writes below ``DIR/vis_data/vis_image``)."""
    scope = cfg.get('default_scope', 'mmpretrain')
    show_dir = osp.abspath(show_dir)  # mmdet would put a relative one under work_dir/<timestamp>/
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ValueError('--show-dir: the config has no default_hooks.visualization')
    if scope == 'mmdet':
        hook.update(draw=True, test_out_dir=show_dir)
    elif scope == 'mmseg':
        hook.update(draw=True, interval=1)
        cfg.visualizer.save_dir = show_dir
    else:
        from .hooks import visualization_hook  # noqa: F401  (registers the hook in mmpretrain)
        hook.update(type='TTAAwareVisualizationHook', enable=True, out_dir=show_dir, interval=1)
    return osp.join(show_dir, _PICTURES[scope])


def pictures_in(pattern: str) -> List[str]:
    return sorted(p for p in glob.glob(pattern) if osp.isfile(p))


class count_forward_passes:
    """Count calls of ``model.test_step`` while the block runs (the TTA wrapper calls it once per view
    batch, so the count shows the augmentation ran)."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __enter__(self):
        original = self.model.test_step

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)
        self.model.test_step = counted
        return self

    def __exit__(self, *exc):
        del self.model.test_step  # back to the class's method
        return False

