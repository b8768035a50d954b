"""Test-time augmentation for instance segmentation: mmdet's ``DetTTAModel`` with masks.

mmdet 3.3's ``DetTTAModel`` merges boxes over the views of an image (flip back, then NMS) and refuses
masks ("TTA of instance segmentation does not support now"), so ``tools/test.py --tta`` could not run
the Mask R-CNN configs. ``MaskDetTTAModel`` merges the same way and keeps, for every box that survives
NMS, the mask its own view predicted, flipped back like the box. Masks are already pasted at the
original image size by each view's post-processing, so no resizing is needed.

``import boat_mm.models.test_time_augs.det_tta`` registers it in mmdet's MODELS (the Mask R-CNN TTA config imports it).
"""
from typing import List

import torch
from mmcv.ops import batched_nms
from mmdet.models.test_time_augs import DetTTAModel
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

__all__ = ['MaskDetTTAModel', 'flip_masks']


def flip_masks(masks: torch.Tensor, direction: str) -> torch.Tensor:
    """Undo a ``RandomFlip`` on (n, H, W) masks ('horizontal', 'vertical' or 'diagonal')."""
    dims = {'horizontal': (-1,), 'vertical': (-2,), 'diagonal': (-2, -1)}
    if direction not in dims:
        raise ValueError(f'unknown flip direction {direction!r}; expected one of {sorted(dims)}')
    return masks.flip(dims[direction])


@MODELS.register_module()
class MaskDetTTAModel(DetTTAModel):
    """``DetTTAModel`` that also merges instance masks (multi-scale + flip TTA of Mask R-CNN).

    Config::

        tta_model = dict(type='MaskDetTTAModel',
                         tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
    """

    def _merge_single_sample(self, data_samples: List[DetDataSample]) -> DetDataSample:
        if data_samples[0].pred_instances.get('masks', None) is None:
            return super()._merge_single_sample(data_samples)
        instances = [sample.pred_instances for sample in data_samples]
        metas = [sample.metainfo for sample in data_samples]
        boxes, scores = self.merge_aug_bboxes([i.bboxes for i in instances], [i.scores for i in instances], metas)
        labels = torch.cat([i.labels for i in instances])
        masks = torch.cat([flip_masks(i.masks, meta['flip_direction']) if meta.get('flip') else i.masks
                           for i, meta in zip(instances, metas)])
        merged = data_samples[0]
        if boxes.numel() == 0:
            return merged
        kept_boxes, keep = batched_nms(boxes, scores, labels, self.tta_cfg.nms)
        keep = keep[:self.tta_cfg.max_per_img]
        kept_boxes = kept_boxes[:self.tta_cfg.max_per_img]
        results = InstanceData()
        results.bboxes = kept_boxes[:, :-1]
        results.scores = kept_boxes[:, -1]
        results.labels = labels[keep]
        results.masks = masks[keep]
        merged.pred_instances = results
        return merged
