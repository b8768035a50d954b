"""Small, deterministic synthetic datasets in the real on-disk formats of ImageNet, COCO and ADE20K.

Every image is a noisy background with a few shapes; each class has its own colour and stripe
texture, so a model can learn them in minutes on a CPU. Used by ``make demo``, the tests, and anyone
who wants to try a config without the real data (``tools/make_demo_data.py``).

Formats written:
- ImageNet style: ``<root>/train/<class>/*.JPEG`` and ``<root>/val/<class>/*.JPEG``, plus
  ``<root>/meta/{train,val}.txt`` ann files (``relative/path label`` per line).
- COCO: ``<root>/{train2017,val2017}/*.jpg`` and ``<root>/annotations/instances_{train,val}2017.json``
  with each instance's visible mask (RLE; bbox and area from the same mask).
- ADE20K: ``<root>/images/{training,validation}/*.jpg`` and ``<root>/annotations/{training,validation}/*.png``;
  label maps use 0 for background ("other", ignored as in ADE20K) and 1..K for the classes.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

__all__ = ['DEMO_CLASSES', 'make_imagenet', 'make_coco', 'make_ade20k', 'make_all']

DEMO_CLASSES = ('red_stripes', 'green_checks', 'blue_dots')
# Per class: RGB colour and the texture that fills its shapes.
_CLASS_STYLE = {
    'red_stripes': ((220, 60, 50), 'stripes'),
    'green_checks': ((60, 200, 80), 'checks'),
    'blue_dots': ((50, 90, 230), 'dots'),
}
_TEXTURE_PERIOD = 6
_POLYGON_POINTS = 24
_JPEG_QUALITY = 95


def _texture(kind: str, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    if kind == 'stripes':
        return ((xx + yy) // _TEXTURE_PERIOD) % 2 == 0
    if kind == 'checks':
        return ((xx // _TEXTURE_PERIOD) + (yy // _TEXTURE_PERIOD)) % 2 == 0
    return ((xx % _TEXTURE_PERIOD) < 3) & ((yy % _TEXTURE_PERIOD) < 3)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    base = rng.integers(90, 160, size=3)
    noise = rng.normal(0, 18, size=(height, width, 3))
    return np.clip(base + noise, 0, 255)


def _ellipse_polygon(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, _POLYGON_POINTS, endpoint=False)
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1)


def _polygon_mask(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import ImageDraw
    canvas = Image.new('L', (width, height), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in polygon], fill=1)
    return np.asarray(canvas, dtype=bool)


def _draw_scene(rng: np.random.Generator, height: int, width: int, num_shapes: int,
                classes: Sequence[int] = None) -> Tuple[np.ndarray, np.ndarray, List[dict]]:
    """One image: returns (HxWx3 uint8 image, HxW label map with 0 = background, instances)."""
    image = _background(rng, height, width)
    labels = np.zeros((height, width), dtype=np.uint8)
    instances = []
    for i in range(num_shapes):
        class_index = int(classes[i] if classes is not None else rng.integers(len(DEMO_CLASSES)))
        colour, texture = _CLASS_STYLE[DEMO_CLASSES[class_index]]
        rx = rng.uniform(0.12, 0.3) * width
        ry = rng.uniform(0.12, 0.3) * height
        cx = rng.uniform(rx, width - rx)
        cy = rng.uniform(ry, height - ry)
        if rng.random() < 0.5:
            polygon = _ellipse_polygon(cx, cy, rx, ry)
        else:
            polygon = np.array([[cx - rx, cy - ry], [cx + rx, cy - ry], [cx + rx, cy + ry], [cx - rx, cy + ry]])
        mask = _polygon_mask(polygon, height, width)
        if not mask.any():
            continue
        pattern = _texture(texture, height, width)
        shade = np.where(pattern[..., None], np.array(colour), np.array(colour) * 0.45)
        image[mask] = shade[mask]
        labels[mask] = class_index + 1
        instances.append(dict(class_index=class_index, mask=mask))
    # Later shapes cover earlier ones: keep only what is visible of each instance.
    for i, inst in enumerate(instances):
        for later in instances[i + 1:]:
            inst['mask'] = inst['mask'] & ~later['mask']
    return image.astype(np.uint8), labels, [inst for inst in instances if inst['mask'].sum() > 0]


def _save_jpeg(array: np.ndarray, path: str) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, quality=_JPEG_QUALITY)


def make_imagenet(root: str, num_train: int = 24, num_val: int = 12, size: int = 64, seed: int = 0) -> Dict:
    """ImageNet-style folders (one shape of the image's class on a noisy background)."""
    rng = np.random.default_rng(seed)
    counts = {}
    for split, count in (('train', num_train), ('val', num_val)):
        lines = []
        for i in range(count):
            class_index = i % len(DEMO_CLASSES)
            image, _, _ = _draw_scene(rng, size, size, 1, classes=[class_index])
            rel = f'{DEMO_CLASSES[class_index]}/{split}_{i:05d}.JPEG'
            _save_jpeg(image, osp.join(root, split, rel))
            lines.append(f'{rel} {class_index}')
        os.makedirs(osp.join(root, 'meta'), exist_ok=True)
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
        counts[split] = count
    return counts


def _visible_mask_annotation(mask: np.ndarray) -> dict:
    """COCO ``segmentation`` (compressed RLE), ``bbox`` and ``area`` of one instance, all three from its visible
    mask: a shape partly covered by a later one is annotated as what the image shows of it."""
    from pycocotools import mask as mask_utils  # mmdet's own dependency, needed only for COCO
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle['counts'] = rle['counts'].decode('ascii')  # bytes -> str for json
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return dict(segmentation=rle, bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                area=float(mask.sum()))


def make_coco(root: str, num_train: int = 16, num_val: int = 8, size: Tuple[int, int] = (128, 160),
              seed: int = 1) -> Dict:
    """COCO instances json (visible masks as RLE) + images, for train2017 and val2017."""
    rng = np.random.default_rng(seed)
    height, width = size
    categories = [dict(id=i + 1, name=name, supercategory='shape') for i, name in enumerate(DEMO_CLASSES)]
    counts = {}
    ann_id = 1
    for split, count in (('train2017', num_train), ('val2017', num_val)):
        images, annotations = [], []
        for i in range(count):
            image, _, instances = _draw_scene(rng, height, width, int(rng.integers(1, 4)))
            file_name = f'{i:012d}.jpg'
            _save_jpeg(image, osp.join(root, split, file_name))
            images.append(dict(id=i + 1, file_name=file_name, height=height, width=width))
            for inst in instances:
                annotations.append(dict(id=ann_id, image_id=i + 1, category_id=inst['class_index'] + 1, iscrowd=0,
                                        **_visible_mask_annotation(inst['mask'])))
                ann_id += 1
        os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
        with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)
        counts[split] = count
    return counts


def make_ade20k(root: str, num_train: int = 48, num_val: int = 12, size: Tuple[int, int] = (128, 128),
                seed: int = 2) -> Dict:
    """ADE20K layout: JPEG images and PNG label maps (0 = background/ignored, 1..K = classes)."""
    rng = np.random.default_rng(seed)
    height, width = size
    counts = {}
    for split, count in (('training', num_train), ('validation', num_val)):
        for i in range(count):
            image, labels, _ = _draw_scene(rng, height, width, int(rng.integers(1, 4)))
            stem = f'ADE_{split[:5]}_{i:08d}'
            _save_jpeg(image, osp.join(root, 'images', split, stem + '.jpg'))
            os.makedirs(osp.join(root, 'annotations', split), exist_ok=True)
            Image.fromarray(labels).save(osp.join(root, 'annotations', split, stem + '.png'))
        counts[split] = count
    return counts


def make_all(root: str) -> Dict[str, Dict]:
    """All three demo datasets under ``root`` (imagenet/, coco/, ade20k/)."""
    return dict(imagenet=make_imagenet(osp.join(root, 'imagenet')), coco=make_coco(osp.join(root, 'coco')),
                ade20k=make_ade20k(osp.join(root, 'ade20k')))
