"""Dataset helpers every tool shares: the one unwrap of dataset wrappers, the early check that the data
is there, and the one way an image is preprocessed for a model (the config's test pipeline).
"""
import importlib
import os.path as osp
from typing import Iterator, List, Tuple

__all__ = ['DATA_HELP', 'DEMO_CONFIGS', 'DatasetNotFoundError', 'innermost_dataset', 'leaf_datasets',
           'check_datasets', 'is_annotation_transform', 'inference_pipeline', 'model_inputs_of_image']

# How to get the real data, per toolbox scope.
DATA_HELP = {
    'mmpretrain': 'ImageNet-1K from https://image-net.org (train/ and val/ class folders, meta/*.txt)',
    'mmdet': 'COCO 2017 from https://cocodataset.org (train2017/, val2017/, annotations/instances_*.json)',
    'mmseg': 'ADE20K (ADEChallengeData2016) from http://sceneparsing.csail.mit.edu '
             '(images/ and annotations/ with training/ and validation/)',
}
DEMO_CONFIGS = {
    'mmpretrain': 'configs/demo/cls_boat_swin_imagenet_demo.py',
    'mmdet': 'configs/demo/mask-rcnn_boat_swin_coco_demo.py',
    'mmseg': 'configs/demo/upernet_boat_cswin_ade20k_demo.py',
}
# Loading transforms of annotations end in this (LoadAnnotations of every toolbox, mmdet's
# LoadPanopticAnnotations...): an unlabelled image has none to load.
ANNOTATION_TRANSFORM_SUFFIX = 'Annotations'


class DatasetNotFoundError(FileNotFoundError):
    """A dataset path named by the config does not exist."""


def innermost_dataset(dataset_cfg: dict) -> dict:
    """The dataset config that owns the pipeline (inside RepeatDataset / ClassBalancedDataset wrappers)."""
    while isinstance(dataset_cfg.get('dataset'), dict):
        dataset_cfg = dataset_cfg['dataset']
    return dataset_cfg


def leaf_datasets(node) -> Iterator[dict]:
    """Every dataset config that reads files: unwraps RepeatDataset / ClassBalancedDataset and the
    ``datasets`` of ConcatDataset."""
    if not isinstance(node, dict):
        return
    if 'datasets' in node:
        for child in node['datasets']:
            yield from leaf_datasets(child)
    elif isinstance(node.get('dataset'), dict):
        yield from leaf_datasets(node['dataset'])
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


def check_datasets(cfg, loaders=('train_dataloader', 'val_dataloader', 'test_dataloader')) -> None:
    """Fail early, naming the missing path and how to get data, instead of deep inside a dataset."""
    scope = cfg.get('default_scope', 'mmengine')
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not loader_cfg or 'dataset' not in loader_cfg:
            continue
        for dataset in leaf_datasets(loader_cfg['dataset']):
            for kind, path in _expected_paths(dataset):
                if not osp.exists(path):
                    raise DatasetNotFoundError(
                        f'{loader}: the {dataset.get("type", "dataset")} {kind} {path!r} does not exist.\n'
                        f'  Get the real data: {DATA_HELP.get(scope, "see the toolbox docs")}, and put it '
                        f'there (or pass --cfg-options {loader}.dataset.data_root=/your/path).\n'
                        f'  Or try the demo data: python tools/make_demo_data.py data/demo && '
                        f'python tools/train.py {DEMO_CONFIGS.get(scope, "configs/demo/...")}')


def is_annotation_transform(step: dict) -> bool:
    """True for a transform that loads annotations (``LoadAnnotations`` and its kin)."""
    return str(step.get('type', '')).endswith(ANNOTATION_TRANSFORM_SUFFIX)


def inference_pipeline(cfg) -> List[dict]:
    """The config's test pipeline (``test_pipeline``, else its test dataset's) without annotation loading:
    what an unlabelled image goes through."""
    pipeline = cfg.get('test_pipeline') or innermost_dataset(cfg.test_dataloader.dataset).pipeline
    return [dict(step) for step in pipeline if not is_annotation_transform(step)]


def model_inputs_of_image(model, cfg, scope: str, image: str):
    """(inputs (1, 3, H, W) float, data sample) of ``image`` after ``inference_pipeline`` and the model's data
    preprocessor: exactly what the model's ``predict`` sees."""
    import torch
    from mmengine.dataset import Compose
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(scope):
        importlib.import_module(f'{scope}.registry')
        data = Compose(inference_pipeline(cfg))(dict(img_path=image, img_id=0))
    batch = dict(inputs=[data['inputs']], data_samples=[data['data_samples']])
    with torch.no_grad():
        processed = model.data_preprocessor(batch, False)
    return processed['inputs'].float(), processed['data_samples'][0]
