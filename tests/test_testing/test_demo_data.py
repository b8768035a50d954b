"""The demo COCO annotations describe what the image shows: segmentation, bbox and area of every instance
come from the same visible mask (a shape partly covered by a later one is annotated as its visible part)."""
import json

import numpy as np
from pycocotools import mask as mask_utils

from boat_mm.testing.demo_data import make_coco


def _decoded(segmentation, height, width) -> np.ndarray:
    if isinstance(segmentation, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    else:
        rle = dict(segmentation, counts=segmentation['counts'].encode('ascii'))
    return mask_utils.decode(rle).astype(bool)


def test_segmentation_bbox_and_area_agree(tmp_path):
    make_coco(str(tmp_path), num_train=12, num_val=0)
    data = json.loads((tmp_path / 'annotations' / 'instances_train2017.json').read_text())
    sizes = {image['id']: (image['height'], image['width']) for image in data['images']}
    assert len(data['annotations']) > len(data['images'])  # several shapes per image: occlusion happens
    for ann in data['annotations']:
        mask = _decoded(ann['segmentation'], *sizes[ann['image_id']])
        ys, xs = np.nonzero(mask)
        box = [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]
        assert ann['area'] == float(mask.sum()), ann['id']
        assert ann['bbox'] == box, ann['id']


def test_instances_of_one_image_do_not_overlap(tmp_path):
    """Visible masks partition what they cover: no pixel belongs to two instances."""
    make_coco(str(tmp_path), num_train=12, num_val=0)
    data = json.loads((tmp_path / 'annotations' / 'instances_train2017.json').read_text())
    sizes = {image['id']: (image['height'], image['width']) for image in data['images']}
    covered = {}
    for ann in data['annotations']:
        mask = _decoded(ann['segmentation'], *sizes[ann['image_id']])
        seen = covered.setdefault(ann['image_id'], np.zeros_like(mask))
        assert not (seen & mask).any(), f'annotation {ann["id"]} overlaps an earlier one'
        seen |= mask
