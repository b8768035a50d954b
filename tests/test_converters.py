"""Released BOAT checkpoints -> boat_mm: key layout, strict loading, untouched tensors, file wrappings."""
import argparse
import json
import os
import os.path as osp
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from mmengine.config import Config

from boat_mm import BOATSwinTransformer
from boat_mm.converters import (CSWIN, convert_boat_state_dict, convert_checkpoint, detect_arch,
                                load_released_checkpoint)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
REFERENCE = json.load(open(osp.join(REPO, 'tests', 'data', 'reference_keys.json')))
DEPTHS = {
    'boat_swin_tiny': (2, 2, 6, 2), 'boat_swin_small': (2, 2, 18, 2), 'boat_swin_base': (2, 2, 18, 2),
    'boat_cswin_tiny': (1, 2, 21, 1), 'boat_cswin_small': (2, 4, 32, 2), 'boat_cswin_base': (2, 4, 32, 2),
}
CLS_CONFIG = {'tiny': '', 'small': '-s', 'base': '-b'}


def _block_has_key(name, pattern, stage, block, num_stages=4):
    """Which blocks of the released models own a per-block key (BOAT_SPEC section 4)."""
    if name.startswith('boat_swin'):
        shifted = block % 2 == 1 and stage < num_stages - 1  # the last stage at 224 is one window
        if any(t in pattern for t in ('.attnC.', '.norm4.', '.attn_mask')):
            return shifted
        return True
    if any(t in pattern for t in ('.content_attn.', '.norm3.')):
        return block % 2 == 0
    return True


def released_key_names(name):
    """Concrete key names of a released checkpoint, expanded from the '*' patterns."""
    keys = []
    for pattern in REFERENCE[name]['key_patterns_per_stage']:
        if '*' not in pattern:
            keys.append(pattern)
            continue
        stage = int(pattern.split('.')[1]) if pattern.startswith('layers.') else int(pattern[5]) - 1
        for block in range(DEPTHS[name][stage]):
            if _block_has_key(name, pattern, stage, block):
                keys.append(pattern.replace('*', str(block)))
    return keys


def released_state_dict(name, classifier_state):
    """Random tensors under the released names, shaped like the boat_mm classifier's parameters."""
    torch.manual_seed(0)
    keys = released_key_names(name)
    assert len(keys) == REFERENCE[name]['num_state_dict_keys']
    probe = {k: torch.empty(0) for k in keys}
    renamed = convert_boat_state_dict(probe)
    state = {}
    for key in keys:
        if key.endswith('relative_position_index') or key.endswith('attn_mask'):
            state[key] = torch.zeros(49, 49)
            continue
        new_key = [n for n, v in renamed.items() if v is probe[key]][0]
        state[key] = torch.randn(classifier_state[new_key].shape)
    return state


def classifier(family, arch):
    from mmpretrain.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(osp.join(REPO, 'configs', f'cls_boat_{family}{CLS_CONFIG[arch]}_imagenet.py'))
    return MODELS.build(cfg.model)


@pytest.mark.parametrize('name', sorted(DEPTHS))
def test_released_layout_loads_strictly_into_the_classifier(name):
    family, arch = name.rsplit('_', 1)
    model = classifier(family.replace('boat_', ''), arch)
    state = released_state_dict(name, model.state_dict())
    assert detect_arch(state) == (family, arch)
    converted = convert_boat_state_dict(state)
    model.load_state_dict(converted, strict=True)
    # Round trip: every tensor arrives unchanged, only the rebuilt buffers are dropped.
    dropped = [k for k in state if k.endswith(('relative_position_index', 'attn_mask'))]
    assert len(converted) == len(state) - len(dropped)
    loaded = model.state_dict()
    source_by_id = {id(v): k for k, v in state.items()}
    for key, value in converted.items():
        assert id(value) in source_by_id
        assert torch.equal(loaded[key], state[source_by_id[id(value)]])
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == REFERENCE[name]['num_params']


@pytest.fixture
def swin_tiny_state():
    return released_state_dict('boat_swin_tiny', classifier('swin', 'tiny').state_dict())


@pytest.fixture
def cswin_tiny_state():
    return released_state_dict('boat_cswin_tiny', classifier('cswin', 'tiny').state_dict())


def _fake_yacs(monkeypatch):
    """A stand-in yacs.config.CfgNode so the test can write a BOAT-Swin-style checkpoint without yacs."""
    module = types.ModuleType('yacs.config')

    class CfgNode(dict):
        pass

    CfgNode.__module__ = 'yacs.config'
    CfgNode.__qualname__ = 'CfgNode'
    module.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, 'yacs', types.ModuleType('yacs'))
    monkeypatch.setitem(sys.modules, 'yacs.config', module)
    return CfgNode


def test_boat_swin_wrapping_with_yacs_config(tmp_path, monkeypatch, swin_tiny_state):
    config = _fake_yacs(monkeypatch)(MODEL=dict(TYPE='swin'))
    config.__dict__['__immutable__'] = True
    src = tmp_path / 'boat_swin_tiny.pth'
    torch.save({'model': swin_tiny_state, 'optimizer': {'state': {}}, 'epoch': 299, 'config': config,
                'max_accuracy': 83.2}, str(src))
    monkeypatch.delitem(sys.modules, 'yacs.config')  # the loader must not need yacs
    state = load_released_checkpoint(str(src))
    assert state.keys() == swin_tiny_state.keys()


def test_boat_cswin_timm_wrapping_and_ema(tmp_path, cswin_tiny_state):
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in cswin_tiny_state.items()}
    src = tmp_path / 'cswin_tiny.pth.tar'
    torch.save({'state_dict': cswin_tiny_state, 'state_dict_ema': ema, 'epoch': 300, 'arch': 'CSWin_64_12211_tiny_224',
                'args': argparse.Namespace(model='CSWin_64_12211_tiny_224', lr=2e-3), 'metric': np.float64(82.1)},
               str(src))
    dst = tmp_path / 'out.pth'
    summary = convert_checkpoint(str(src), str(dst), use_ema=True)
    assert (summary['family'], summary['arch'], summary['ema']) == (CSWIN, 'tiny', True)
    out = torch.load(str(dst))['state_dict']
    assert torch.equal(out['head.fc.weight'], ema['head.weight'])
    assert torch.equal(out['backbone.stages.0.blocks.0.fsla.qkv.weight'], ema['stage1.0.content_attn.qkv.weight'])
    plain = load_released_checkpoint(str(src))
    assert torch.equal(plain['head.weight'], cswin_tiny_state['head.weight'])


def test_cli_converts_and_pretrained_init_cfg_loads_it(tmp_path, swin_tiny_state):
    src, dst = tmp_path / 'bare.pth', tmp_path / 'boat_swin_tiny_in1k.pth'
    torch.save(swin_tiny_state, str(src))
    result = subprocess.run([sys.executable, 'tools/model_converters/boat2mm.py', str(src), str(dst)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert 'converted boat_swin-tiny' in result.stdout
    backbone = BOATSwinTransformer('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(dst), prefix='backbone.'))
    backbone.init_weights()
    expected = swin_tiny_state['layers.1.blocks.1.attnC.qkv.weight']
    assert torch.equal(backbone.stages[1].blocks[1].fsla.qkv.weight, expected)
    assert torch.equal(backbone.norm3.weight, swin_tiny_state['norm.weight'])


def test_unrecognised_checkpoint_gives_a_clear_error(tmp_path):
    src = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(1), 'fc.bias': torch.zeros(1)}, str(src))
    with pytest.raises(ValueError, match=r'not a released BOAT checkpoint.*conv1.weight'):
        convert_checkpoint(str(src), str(tmp_path / 'out.pth'))
    result = subprocess.run([sys.executable, 'tools/model_converters/boat2mm.py', str(src), str(tmp_path / 'o.pth')],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and 'not a released BOAT checkpoint' in result.stderr
    assert 'Traceback' not in result.stderr


def test_unknown_arch_and_missing_ema_are_reported(tmp_path, swin_tiny_state):
    odd = {k: v for k, v in swin_tiny_state.items() if not k.startswith('layers.2.blocks.5.')}
    with pytest.raises(ValueError, match='matches no released arch'):
        detect_arch(odd)
    src = tmp_path / 'no_ema.pth'
    torch.save({'state_dict': swin_tiny_state}, str(src))
    with pytest.raises(ValueError, match='no state_dict_ema'):
        load_released_checkpoint(str(src), use_ema=True)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def test_converter_refuses_pickle_payloads(tmp_path):
    marker = tmp_path / 'ran'
    src = tmp_path / 'evil.pth'
    torch.save({'model': {'x': torch.zeros(1)}, 'config': _Payload(marker)}, str(src))
    with pytest.raises(pickle.UnpicklingError, match='refused'):
        load_released_checkpoint(str(src))
    assert not marker.exists()
