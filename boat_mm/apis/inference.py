"""Predictions of a config on one image, drawn by the toolbox the config belongs to (``tools/image_demo.py``).

The config's ``default_scope`` picks the toolbox, and each toolbox's own inferencer runs the model through
the config's test pipeline and draws the result with its own visualizer:

- mmseg: ``MMSegInferencer`` / ``SegLocalVisualizer``: class overlay, plus a legend of the classes present;
- mmdet: ``DetInferencer`` / ``DetLocalVisualizer``: boxes, masks, labels and scores above a threshold;
- mmpretrain: ``ImageClassificationInferencer`` / ``UniversalVisualizer``: the top-5 classes and scores.

Class names and palette come from the checkpoint's ``meta.dataset_meta`` when it has them, otherwise from the
config's test dataset (its class ``METAINFO`` and the config's ``metainfo`` override): without this the
inferencers fall back to Cityscapes (mmseg) or COCO (mmdet) names, wrong for an ADE20K or a demo config.
"""
import importlib
import warnings
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
from mmengine.config import Config

from ..utils.checkpoint import load_checkpoint_file
from ..utils.datasets import innermost_dataset
from ..utils.model_builder import TOOLBOX_SCOPES, single_process_config
from ..visualization.panels import POINTS_PER_INCH, draw_panel, fit_text_px, font_points

__all__ = ['SCOPES', 'TOP_K', 'DEFAULT_SCORE_THR', 'RANDOM_WEIGHTS_CAPTION', 'Prediction', 'load_config',
           'dataset_meta', 'predict', 'render']

SCOPES = TOOLBOX_SCOPES
TOP_K = 5  # classes listed for a classifier
DEFAULT_SCORE_THR = 0.3  # as mmdet's demo/image_demo.py
SEG_OPACITY = 0.5  # overlay weight: the photograph stays visible under the classes
MAX_LISTED = 12  # classes listed in the legend and the printed line; the rest are summed up as "+N more"
LIST_SEPARATOR = '; '  # in printed lists (ImageNet class names hold commas)
RANDOM_WEIGHTS_CAPTION = 'RANDOM WEIGHTS: predictions are meaningless'
PALETTE_SEED = 0  # colours for classes that come without a palette
FALLBACK_CLASSES_NOTICE = r'.*use (classes of )?(COCO|[Cc]ityscapes)( classes)? by default'
WEIGHTS_SEED = 0  # random weights (no checkpoint) are drawn from a fixed seed: the same picture every run

CLS_TEXT_SCALE, CLS_TEXT_OFFSET = 7, 5  # UniversalVisualizer.visualize_cls: text size and offset / image scale


@dataclass
class Prediction:
    """A drawn prediction: the RGB picture, a one-line summary and the (colour, name) rows of its legend."""
    image: np.ndarray
    summary: str
    visualizer: object
    legend: List[Tuple[Tuple[int, int, int], str]] = field(default_factory=list)


def load_config(config: str) -> Tuple[Config, str]:
    """(cfg, scope) ready for single-image inference (``boat_mm.utils.model_builder.single_process_config``:
    SyncBN as BN, no backbone ``init_cfg``: the weights come from the checkpoint, if any)."""
    return single_process_config(config)


def _palette(classes, palette) -> list:
    """``palette`` if it has one colour per class, else fixed pseudo-random colours."""
    if palette is not None and len(palette) == len(classes):
        return [tuple(int(c) for c in colour) for colour in palette]
    rng = np.random.default_rng(PALETTE_SEED)
    return [tuple(int(c) for c in colour) for colour in rng.integers(0, 256, size=(len(classes), 3))]


def dataset_meta(cfg: Config, scope: str, checkpoint: Optional[str]) -> dict:
    """Class names and palette: the checkpoint's ``meta.dataset_meta`` (or 0.x ``CLASSES``), else the config's
    test dataset. Loads the checkpoint once more than the inferencer does (the inferencers do not say whether
    the checkpoint had class names); ``{}`` when nothing names the classes."""
    if checkpoint:
        meta = load_checkpoint_file(checkpoint).get('meta') or {}
        saved = meta.get('dataset_meta') or ({'classes': meta['CLASSES']} if 'CLASSES' in meta else {})
        saved = {key.lower(): value for key, value in saved.items()}
        if saved.get('classes'):
            return dict(classes=list(saved['classes']), palette=_palette(saved['classes'], saved.get('palette')))
    dataset = innermost_dataset(cfg.test_dataloader.dataset)
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(scope):
        dataset_class = importlib.import_module(f'{scope}.registry').DATASETS.get(dataset.type)
    meta = dict(getattr(dataset_class, 'METAINFO', None) or {})
    meta.update(dataset.get('metainfo') or {})
    if not meta.get('classes'):
        return {}
    return dict(classes=list(meta['classes']), palette=_palette(meta['classes'], meta.get('palette')))


def _class_name(classes, index: int) -> str:
    return classes[index] if classes and 0 <= index < len(classes) else f'class {index}'


def _count(number: int, noun: str) -> str:
    return f'{number} {noun}{"" if number == 1 else "es" if noun.endswith("s") else "s"}'


def _listed(items: List[str]) -> str:
    extra = len(items) - MAX_LISTED
    return LIST_SEPARATOR.join(items[:MAX_LISTED]) + (f'{LIST_SEPARATOR}+{extra} more' if extra > 0 else '')


def _predict_seg(cfg, image, checkpoint, device, meta, score_thr):
    import mmcv
    from mmseg.apis import MMSegInferencer
    inferencer = MMSegInferencer(cfg, weights=checkpoint, device=device)
    inferencer.show_progress = False
    if meta:
        inferencer.model.dataset_meta = meta
    meta = inferencer.model.dataset_meta
    sample = inferencer(image, return_datasamples=True)
    # Drawn as MMSegInferencer.visualize() does, but without its class names written over the regions
    # (``with_labels``, not an inferencer option): the legend names them without hiding the image.
    visualizer = inferencer.visualizer
    visualizer.set_dataset_meta(**meta)
    visualizer.alpha = SEG_OPACITY
    visualizer.add_datasample('image', mmcv.imread(image, channel_order='rgb'), sample, draw_gt=False,
                              with_labels=False)
    labels, counts = np.unique(sample.pred_sem_seg.data.cpu().numpy(), return_counts=True)
    order = np.argsort(-counts)
    shares = counts[order] / counts.sum()
    names = [_class_name(meta['classes'], int(label)) for label in labels[order]]
    legend = [(tuple(meta['palette'][label]) if label < len(meta['palette']) else (0, 0, 0),
               f'{name} {share:.1%}') for label, name, share in zip(labels[order], names, shares)]
    summary = f'{_count(len(labels), "class")} present: ' + _listed([f'{n} {s:.1%}' for n, s in zip(names, shares)])
    return Prediction(visualizer.get_image(), summary, visualizer, legend)


def _predict_det(cfg, image, checkpoint, device, meta, score_thr):
    from mmdet.apis import DetInferencer
    inferencer = DetInferencer(cfg, weights=checkpoint, device=device, show_progress=False)
    if meta:
        inferencer.model.dataset_meta = inferencer.visualizer.dataset_meta = meta
    classes = inferencer.model.dataset_meta.get('classes')
    result = inferencer(image, return_vis=True, no_save_vis=True, pred_score_thr=score_thr)
    found = result['predictions'][0]
    kept = [(score, label) for score, label in zip(found['scores'], found['labels']) if score >= score_thr]
    summary = (f'{_count(len(kept), "instance")} with score >= {score_thr} '
               f'(of {_count(len(found["scores"]), "detection")})'
               + (': ' + _listed([f'{_class_name(classes, label)} {score:.2f}' for score, label in kept])
                  if kept else ''))
    return Prediction(result['visualization'][0], summary, inferencer.visualizer)


def _predict_cls(cfg, image, checkpoint, device, meta, score_thr):
    import mmcv
    from mmpretrain.apis import ImageClassificationInferencer
    from mmpretrain.visualization import UniversalVisualizer
    from mmpretrain.visualization.utils import get_adaptive_scale
    inferencer = ImageClassificationInferencer(cfg, pretrained=checkpoint or False, device=device,
                                               classes=meta.get('classes'))
    sample = inferencer(image, return_datasamples=True)[0]
    top = sample.pred_score.topk(min(TOP_K, sample.pred_score.numel()))
    # UniversalVisualizer draws every entry of pred_label (with its pred_score): give it the top-k.
    sample.set_pred_label(top.indices)
    visualizer = inferencer.visualizer or UniversalVisualizer()
    picture = mmcv.imread(image, channel_order='rgb')
    # Its text size (points) follows the image size only: shrink it so the longest line, "Prediction:
    # <index>, <score> (<class name>)", stays inside the image (it starts 5 x scale pixels from the edge).
    scale = get_adaptive_scale(picture.shape[:2])
    longest = len('Prediction: ') + max(len(f'{int(i)}, 0.00 ({_class_name(inferencer.classes, int(i))})')
                                        for i in top.indices)
    default_px = int(scale * CLS_TEXT_SCALE) * visualizer.dpi / POINTS_PER_INCH
    size = font_points(visualizer, fit_text_px(picture, longest, default_px, margin=2 * CLS_TEXT_OFFSET * scale))
    visualizer.visualize_cls(picture, sample, classes=inferencer.classes, draw_gt=False, draw_pred=True,
                             draw_score=True, text_cfg=dict(size=size))
    summary = f'top-{len(top.indices)}: ' + LIST_SEPARATOR.join(
        f'{_class_name(inferencer.classes, int(i))} {float(s):.4f}' for s, i in zip(top.values, top.indices))
    return Prediction(visualizer.get_image(), summary, visualizer)


_PREDICTORS = dict(mmseg=_predict_seg, mmdet=_predict_det, mmpretrain=_predict_cls)


def predict(cfg: Config, scope: str, image: str, checkpoint: Optional[str] = None, device: str = 'cpu',
            score_thr: float = DEFAULT_SCORE_THR) -> Prediction:
    """Run the toolbox's inferencer on ``image`` and draw the result with its visualizer."""
    import torch
    from mmengine.registry import init_default_scope
    init_default_scope(scope)
    torch.manual_seed(WEIGHTS_SEED)
    meta = dataset_meta(cfg, scope, checkpoint)
    with warnings.catch_warnings():
        if meta:  # we name the classes: the inferencers' "use COCO/Cityscapes classes" notice does not apply
            warnings.filterwarnings('ignore', message=FALLBACK_CLASSES_NOTICE)
        return _PREDICTORS[scope](cfg, image, checkpoint, device, meta, score_thr)


def render(prediction: Prediction, random_weights: bool) -> np.ndarray:
    """The drawn prediction with its legend (top right) and, for random weights, a red caption (bottom left);
    same size as the input image."""
    visualizer = prediction.visualizer
    visualizer.set_image(prediction.image)
    if prediction.legend:
        colours, names = zip(*prediction.legend)
        draw_panel(visualizer, list(names), 'top-right', swatches=list(colours), max_rows=MAX_LISTED + 1)
    if random_weights:
        draw_panel(visualizer, [RANDOM_WEIGHTS_CAPTION], 'bottom-left', color='red')
    return visualizer.get_image()
