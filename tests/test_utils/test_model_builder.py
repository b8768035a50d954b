"""The one single-process model builder: SyncBN as BN, no backbone init_cfg, the Runner's data_preprocessor
default, the config's toolbox; and the one image preprocessing (annotation loading left out)."""
import os.path as osp

import pytest
import torch
from conftest import REPO
from mmengine.config import Config

from boat_mm.utils.datasets import inference_pipeline, is_annotation_transform, model_inputs_of_image
from boat_mm.utils.model_builder import build_model, single_process_config

SEG_DEMO = osp.join(REPO, 'configs', 'demo', 'upernet_boat_cswin_ade20k_demo.py')


def test_single_process_config():
    cfg, scope = single_process_config(osp.join(REPO, 'configs', 'upernet_boat_cswin_ade20k.py'))
    assert scope == 'mmseg'
    assert 'SyncBN' not in str(cfg.model) and 'init_cfg' not in cfg.model.backbone
    assert cfg.model.data_preprocessor.type == 'SegDataPreProcessor'


def test_unknown_scope_is_refused(tmp_path):
    config = tmp_path / 'cfg.py'
    config.write_text("default_scope = 'mmocr'\nmodel = dict(type='X')\n")
    with pytest.raises(ValueError, match="default_scope 'mmocr'"):
        single_process_config(str(config))


def test_annotation_transforms_are_recognised():
    assert is_annotation_transform(dict(type='LoadAnnotations'))
    assert is_annotation_transform(dict(type='LoadPanopticAnnotations'))
    assert not is_annotation_transform(dict(type='LoadImageFromFile'))
    assert not any(is_annotation_transform(step) for step in inference_pipeline(Config.fromfile(SEG_DEMO)))


def test_one_image_through_the_test_pipeline(tmp_path):
    from PIL import Image
    image = tmp_path / 'image.png'
    Image.new('RGB', (100, 60), (200, 10, 10)).save(image)
    cfg, model = build_model(SEG_DEMO)
    assert not model.training
    inputs, sample = model_inputs_of_image(model, cfg, 'mmseg', str(image))
    assert inputs.dtype == torch.float32 and inputs.shape[:2] == (1, 3)
    assert tuple(sample.ori_shape) == (60, 100)
