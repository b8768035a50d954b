"""tools/image_demo.py: each toolbox's inferencer and visualizer on a real photograph, random weights or a
checkpoint, output the size of the input, clear errors."""
import os
import os.path as osp
import re
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
import torch
from conftest import REPO  # noqa: E402
from PIL import Image

TOOL = osp.join(REPO, 'tools', 'image_demo.py')
PHOTO = osp.join(matplotlib.get_data_path(), 'sample_data', 'grace_hopper.jpg')
TIMEOUT = 600
RANDOM_WARNING = 'RANDOM WEIGHTS'
# Share of the pixels the drawing must change besides the caption: the class overlay covers the whole image,
# the top-5 text box a corner; random detections may all score below the threshold (nothing drawn).
MIN_CHANGED = dict(seg=0.5, det=0, cls=0.02)
CAPTION_STRIP = 0.15  # the random-weights caption lies in the bottom 15% of the picture
CHANGED_LEVEL = 30  # a pixel counts as drawn over when a channel moved by more than this
CAPTION_RED = dict(min_red=230, max_green_blue=30)  # its pure red text; the photograph has none there

# config, what stdout must say about the prediction
TASKS = {
    'seg': ('configs/upernet_boat_cswin_ade20k.py', r'\(mmseg, random weights\): (\d+) class(?:es)? present: (.+)'),
    'det': ('configs/mask-rcnn_boat_swin_coco_1x.py',
            r'\(mmdet, random weights\): (\d+) instances? with score >= 0\.3 \(of (\d+) detections?\)'),
    'cls': ('configs/cls_boat_swin_imagenet.py', r'\(mmpretrain, random weights\): top-5: (.+)'),
}


def run(*args):
    result = subprocess.run([sys.executable, TOOL, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                            timeout=TIMEOUT, env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    return result, result.stdout + result.stderr


def scored(listing):
    """'name 0.1234; other name 0.0567' -> [('name', 0.1234), ('other name', 0.0567)]"""
    pairs = [re.fullmatch(r'(.+) ([\d.]+)%?', item) for item in listing.split('; ')]
    assert all(pairs), listing
    return [(p.group(1), float(p.group(2))) for p in pairs]


def red_caption_pixels(picture):
    strip = picture[int(picture.shape[0] * (1 - CAPTION_STRIP)):].astype(int)
    low = CAPTION_RED['max_green_blue']
    return int(((strip[..., 0] > CAPTION_RED['min_red']) & (strip[..., 1] < low) & (strip[..., 2] < low)).sum())


@pytest.mark.parametrize('task', ['seg', 'det', 'cls'])
def test_random_weights_prediction_is_drawn_at_the_image_size(tmp_path, task):
    config, pattern = TASKS[task]
    out = tmp_path / 'nested' / 'x.png'  # the folder does not exist yet
    result, log = run(PHOTO, config, '--out', out, '--device', 'cpu')
    assert result.returncode == 0, log[-3000:]
    assert RANDOM_WARNING in result.stderr
    match = re.search(pattern, result.stdout)
    assert match, result.stdout
    photo = np.asarray(Image.open(PHOTO).convert('RGB'))
    picture = np.asarray(Image.open(out).convert('RGB'))
    assert picture.shape == photo.shape
    above_caption = slice(0, int(photo.shape[0] * (1 - CAPTION_STRIP)))
    changed = np.abs(picture[above_caption].astype(int) - photo[above_caption]).max(axis=2) > CHANGED_LEVEL
    assert changed.mean() >= MIN_CHANGED[task]
    assert red_caption_pixels(picture) > 0 and red_caption_pixels(photo) == 0
    if task == 'seg':
        shares = scored(match.group(2).split('; +')[0])
        assert int(match.group(1)) >= len(shares) >= 1
        assert all(0 < share <= 100 for _, share in shares)
        assert [s for _, s in shares] == sorted((s for _, s in shares), reverse=True)
    elif task == 'det':
        assert int(match.group(1)) <= int(match.group(2))
    else:
        top = scored(match.group(1))
        assert len(top) == 5
        scores = [score for _, score in top]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-3
        assert all(not name.startswith('class ') for name, _ in top)  # ImageNet names, not indices


def test_checkpoint_weights_and_class_names_are_used(tmp_path):
    from boat_mm.utils.model_builder import build_model
    config = 'configs/demo/cls_boat_swin_imagenet_demo.py'
    _, model = build_model(osp.join(REPO, config))
    classes = ('alpha', 'beta', 'gamma')
    checkpoint = tmp_path / 'demo.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=dict(classes=classes))), checkpoint)
    out = tmp_path / 'x.png'
    result, log = run(PHOTO, config, checkpoint, '--out', out, '--device', 'cpu')
    assert result.returncode == 0, log[-3000:]
    assert RANDOM_WARNING not in log and 'random' not in result.stdout
    match = re.search(r'\(mmpretrain\): top-3: (.+)', result.stdout)  # three classes: top-3, not top-5
    assert match, result.stdout
    assert sorted(name for name, _ in scored(match.group(1))) == sorted(classes)
    picture = np.asarray(Image.open(out).convert('RGB'))
    assert picture.shape == np.asarray(Image.open(PHOTO)).shape
    assert red_caption_pixels(picture) == 0


def test_missing_image_is_a_clear_error(tmp_path):
    result, log = run(tmp_path / 'nope.jpg', TASKS['cls'][0], '--out', tmp_path / 'x.png')
    assert result.returncode != 0
    assert 'error: image not found' in result.stderr and 'Traceback' not in log
    assert not (tmp_path / 'x.png').exists()
