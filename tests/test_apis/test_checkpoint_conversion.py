"""Released BOAT checkpoints -> boat_mm: key layout, strict loading, untouched tensors, file wrappings."""
import argparse
import json
import os.path as osp
import pickle
import re
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from conftest import (
    REPO,  # noqa: E402
    OsSystemPayload,
)
from mmengine.config import Config

from boat_mm import BOATCSWinTransformer, BOATSwinTransformer
from boat_mm.apis.checkpoint_conversion import convert_checkpoint, detect_arch, infer_backbone_cfg
from boat_mm.models.utils.ckpt_convert import (
    CSWIN,
    TOOLBOX_SWIN,
    backbone_state_dict,
    convert_boat_state_dict,
    convert_state_dict,
    detect_layout,
    load_released_checkpoint,
)

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


def classifier(family, size, **backbone):
    """Our ImageNet classifier config of ``family``/``size``, with backbone arguments overridden."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(osp.join(REPO, 'configs', f'cls_boat_{family}{CLS_CONFIG[size]}_imagenet.py'))
    cfg.model.backbone.update(backbone)
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
    assert 'converted released BOAT-Swin (boat_swin-tiny)' in result.stdout
    assert "paste into your config: backbone=dict(type='BOATSwinTransformer', arch='tiny')" in result.stdout
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


def test_missing_ema_is_reported(tmp_path, swin_tiny_state):
    src = tmp_path / 'no_ema.pth'
    torch.save({'state_dict': swin_tiny_state}, str(src))
    with pytest.raises(ValueError, match='no state_dict_ema'):
        load_released_checkpoint(str(src), use_ema=True)


def test_gaps_in_block_numbering_are_reported(swin_tiny_state):
    odd = {k: v for k, v in swin_tiny_state.items() if not k.startswith('layers.2.blocks.3.')}
    with pytest.raises(ValueError, match=r'blocks are not numbered 0..n-1'):
        detect_arch(odd)


def test_converter_refuses_pickle_payloads(tmp_path):
    marker = tmp_path / 'ran'
    src = tmp_path / 'evil.pth'
    torch.save({'model': {'x': torch.zeros(1)}, 'config': OsSystemPayload(marker)}, str(src))
    with pytest.raises(pickle.UnpicklingError, match='refused'):
        load_released_checkpoint(str(src))
    assert not marker.exists()


# --- the whole family: official Swin / CSWin, OpenMMLab Swin, BOAT of any architecture -----------------

FSLA_KEY = re.compile(r'\.(attnC|norm4|content_attn)\.|^stage\d\.\d+\.norm3\.')
# The official models' parameter counts (1000-class classifiers): Swin from its paper/model zoo, CSWin
# checked against the plain CSWin of the public BOAT-CSWin segmentation code (backbone + 1000-class head).
OFFICIAL_PARAMS = {('swin', 'tiny'): 28_288_354, ('swin', 'small'): 49_606_258, ('swin', 'base'): 87_768_224,
                   ('cswin', 'tiny'): 22_320_552, ('cswin', 'small'): 34_643_304, ('cswin', 'base'): 77_382_184}


def swin_relative_position_index(window):
    """The official Swin buffer: for each (query, key) pair of a window, the row of its relative offset
    in the (2w-1)^2 bias table (peers that load it, as mmseg's Swin does, need the real one)."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing='ij')
    rows, cols = rows.flatten(), cols.flatten()
    d_row = rows[:, None] - rows[None, :] + window - 1
    d_col = cols[:, None] - cols[None, :] + window - 1
    return d_row * (2 * window - 1) + d_col


def official_state_dict(family, arch, scale=0.1):
    """Random tensors under the official Swin / CSWin ImageNet names: the released BOAT layout without FSLA."""
    torch.manual_seed(1)
    name = f'boat_{family}_{arch}'
    keys = [k for k in released_key_names(name) if not FSLA_KEY.search(k)]
    shapes = classifier(family, arch, fsla_stages=()).state_dict()
    probe = {k: torch.empty(0) for k in keys}
    renamed = {id(v): n for n, v in convert_boat_state_dict(probe).items()}
    state = {}
    for key in keys:
        if key.endswith('relative_position_index'):
            state[key] = swin_relative_position_index(7)
        elif key.endswith('attn_mask'):
            state[key] = torch.zeros(49, 49)
        else:
            shape = shapes[renamed[id(probe[key])]].shape
            state[key] = scale * torch.randn(shape) + (1.0 if '.norm' in key and key.endswith('weight') else 0.0)
    return state


def official_swin_state_dict(arch):
    return official_state_dict('swin', arch)


@pytest.mark.parametrize('family', ['swin', 'cswin'])
@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
def test_official_imagenet_layout_loads_strictly_with_fsla_off(family, arch):
    state = official_state_dict(family, arch)
    cfg, notes = infer_backbone_cfg(state)
    assert cfg['fsla_stages'] == () and cfg['arch'] == arch
    assert bool(notes) == (family == 'cswin')  # CSWin heads / stripes are not in the weights
    model = classifier(family, arch, fsla_stages=())
    model.load_state_dict(convert_state_dict(state), strict=True)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[family, arch]


def _forward_stages(model, x):
    """Stage outputs in float64: two implementations of the same function agree to rounding there."""
    model.double().eval()  # (mmseg's SwinTransformer.train returns None: no chaining)
    with torch.no_grad():
        return model(x.double())


def test_official_swin_cross_checked_against_mmseg_swin():
    """One random official Swin-T state dict, converted by us (FSLA off) and by mmdet's official-weights
    converter into mmseg's own SwinTransformer: the same stage outputs. 448x448 keeps every stage larger
    than a window, where the toolboxes' Swin always shifts and the official one does not."""
    from mmdet.models.backbones.swin import swin_converter
    from mmseg.models.backbones import SwinTransformer
    state = official_swin_state_dict('tiny')
    peer = SwinTransformer(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7)
    peer_state = {k[len('backbone.'):]: v for k, v in swin_converter(dict(state)).items()}
    missing, unexpected = peer.load_state_dict(peer_state, strict=False)  # non-strict, as mmdet loads it
    # mmdet's converter maps no output norm (it leaves the classifier's final norm and the masks unused)
    assert all(k.startswith('norm.') or k.endswith('attn_mask') for k in unexpected)
    assert all(re.match(r'norm\d\.', k) for k in missing)
    ours = BOATSwinTransformer('tiny', fsla_stages=(), out_indices=(0, 1, 2, 3))
    ours_state = backbone_state_dict(convert_state_dict(state))
    for i in range(4):  # output norms mmdet's converter does not load: the same values on both sides
        for p in ('weight', 'bias'):
            ours_state[f'norm{i}.{p}'] = getattr(peer, f'norm{i}').state_dict()[p]
    ours.load_state_dict(ours_state, strict=True)
    x = torch.randn(1, 3, 448, 448)
    for a, b in zip(_forward_stages(ours, x), _forward_stages(peer, x)):
        assert a.shape == b.shape
        assert (a - b).abs().max() <= 1e-10


def test_toolbox_swin_backbone_converts_and_matches_mmseg():
    from mmseg.models.backbones import SwinTransformer
    torch.manual_seed(2)
    peer = SwinTransformer(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7)
    with torch.no_grad():
        for param in peer.parameters():
            param.add_(0.1 * torch.randn_like(param))
    state = {'backbone.' + k: v for k, v in peer.state_dict().items()}
    state['decode_head.conv_seg.weight'] = torch.zeros(150, 512, 1, 1)  # a whole mmseg model
    assert detect_layout(state) == TOOLBOX_SWIN
    cfg, _ = infer_backbone_cfg(state)
    assert cfg == dict(type='BOATSwinTransformer', arch='tiny', in_channels=3, patch_size=4, window_size=7,
                       mlp_ratio=4.0, qkv_bias=True, fsla_stages=())
    ours = BOATSwinTransformer('tiny', fsla_stages=(), out_indices=(0, 1, 2, 3))
    ours.load_state_dict(backbone_state_dict(convert_state_dict(state)), strict=True)
    x = torch.randn(1, 3, 448, 448)
    for a, b in zip(_forward_stages(ours, x), _forward_stages(peer, x)):
        assert (a - b).abs().max() <= 1e-10


def test_toolbox_swin_with_position_embedding_converts_to_the_config_that_loads_it():
    """A stock mmseg Swin with ``use_abs_pos_embed=True`` and ``patch_norm=False``: the tool reads both off the
    weights, and the converted weights load strictly into the backbone it prints, giving the stock outputs."""
    from mmseg.models.backbones import SwinTransformer
    arch = dict(embed_dims=16, depths=(2, 2), num_heads=(1, 2))
    torch.manual_seed(4)
    peer = SwinTransformer(**arch, window_size=4, strides=(4, 2), use_abs_pos_embed=True, pretrain_img_size=64,
                           patch_norm=False, out_indices=(0, 1))
    with torch.no_grad():
        for param in peer.parameters():
            param.add_(0.1 * torch.randn_like(param))
    state = {'backbone.' + k: v for k, v in peer.state_dict().items()}
    cfg, _ = infer_backbone_cfg(state)
    assert cfg['use_abs_pos_embed'] is True and cfg['pretrain_img_size'] == 64 and cfg['patch_norm'] is False
    ours = BOATSwinTransformer(**{k: v for k, v in cfg.items() if k != 'type'}, out_indices=(0, 1))
    ours.load_state_dict(backbone_state_dict(convert_state_dict(state)), strict=True)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    for a, b in zip(_forward_stages(ours.double(), x), _forward_stages(peer.double(), x)):
        assert (a - b).abs().max() <= 1e-10


def test_mmpretrain_swin_classifier_converts_and_gives_the_same_logits():
    from mmpretrain.models import build_classifier
    torch.manual_seed(3)
    peer = build_classifier(dict(type='ImageClassifier', backbone=dict(type='SwinTransformer', arch='tiny'),
                                 neck=dict(type='GlobalAveragePooling'),
                                 head=dict(type='LinearClsHead', num_classes=1000, in_channels=768)))
    with torch.no_grad():
        for param in peer.parameters():
            param.add_(0.1 * torch.randn_like(param))
    ours = classifier('swin', 'tiny', fsla_stages=())
    ours.load_state_dict(convert_state_dict(peer.state_dict()), strict=True)
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    ours.double().eval()
    peer.double().eval()
    with torch.no_grad():
        diff = (ours(x, mode='tensor') - peer(x, mode='tensor')).abs().max()
    assert diff <= 1e-10


def _to_released_names(family, state):
    """Our classifier keys -> the reference code's names (written out here, independently of the converter)."""
    out = {}
    for key, value in state.items():
        key = key.replace('backbone.', '', 1).replace('head.fc.', 'head.')
        if family == 'swin':
            key = re.sub(r'^stages\.', 'layers.', key)
            key = key.replace('.fsla.', '.attnC.').replace('.norm_fsla.', '.norm4.').replace('.lepe.', '.get_v.')
            key = re.sub(r'^norm3\.', 'norm.', key)
        else:
            key = re.sub(r'^patch_embed\.proj\.', 'stage1_conv_embed.0.', key)
            key = re.sub(r'^patch_embed\.norm\.', 'stage1_conv_embed.2.', key)
            key = re.sub(r'^stages\.(\d)\.downsample\.proj\.', r'merge\1.conv.', key)
            key = re.sub(r'^stages\.(\d)\.downsample\.norm\.', r'merge\1.norm.', key)
            key = re.sub(r'^stages\.(\d)\.blocks\.', lambda m: f'stage{int(m.group(1)) + 1}.', key)
            key = key.replace('.fsla.', '.content_attn.').replace('.norm_fsla.', '.norm3.').replace('.lepe.', '.get_v.')
            key = re.sub(r'^norm3\.', 'norm.', key)
        out[key] = value
    return out


def test_boat_checkpoint_of_a_custom_architecture(tmp_path):
    arch = dict(embed_dims=32, depths=(2, 2, 4, 2), num_heads=(1, 2, 4, 8))
    source = classifier('swin', 'tiny', arch=arch, window_size=5, mlp_ratio=2.0, fsla_stages=(0, 1))
    src, dst = tmp_path / 'boat_swin_custom.pth', tmp_path / 'out.pth'
    torch.save({'model': _to_released_names('swin', source.state_dict())}, str(src))
    result = subprocess.run([sys.executable, 'tools/model_converters/boat2mm.py', str(src), str(dst)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    line = ("backbone=dict(type='BOATSwinTransformer', arch={'embed_dims': 32, 'depths': (2, 2, 4, 2), "
            "'num_heads': (1, 2, 4, 8)}, window_size=5, mlp_ratio=2.0, fsla_stages=(0, 1))")
    assert line in result.stdout
    target = classifier('swin', 'tiny', arch=arch, window_size=5, mlp_ratio=2.0, fsla_stages=(0, 1))
    target.load_state_dict(torch.load(str(dst))['state_dict'], strict=True)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def test_custom_cswin_needs_heads_and_stripes_from_the_user(tmp_path):
    arch = dict(embed_dims=32, depths=(1, 2, 2, 1), num_heads=(2, 4, 4, 8), split_sizes=(1, 2, 5, 5))
    source = classifier('cswin', 'tiny', arch=arch)
    src, dst = tmp_path / 'cswin_custom.pth.tar', tmp_path / 'out.pth'
    torch.save({'state_dict': _to_released_names('cswin', source.state_dict())}, str(src))
    tool = [sys.executable, 'tools/model_converters/boat2mm.py', str(src), str(dst)]
    result = subprocess.run(tool, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and 'do not determine num_heads' in result.stderr and '--num-heads' in result.stderr
    result = subprocess.run(tool + ['--num-heads', '2', '4', '4', '8', '--split-sizes', '1', '2', '5', '5'],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"backbone=dict(type='BOATCSWinTransformer', arch={arch!r})" in result.stdout
    classifier('cswin', 'tiny', arch=arch).load_state_dict(torch.load(str(dst))['state_dict'], strict=True)


@pytest.mark.parametrize('kind', ['official_swin', 'official_cswin', 'toolbox_swin'])
def test_cli_plain_weights_fsla_off_or_new(tmp_path, kind):
    if kind == 'toolbox_swin':
        from mmseg.models.backbones import SwinTransformer
        state = {'state_dict': {'backbone.' + k: v for k, v in SwinTransformer().state_dict().items()}}
        family, expected_new = 'swin', 'stages.0.blocks.1.fsla.qkv.weight'
    else:
        family = kind.split('_')[1]
        state = {'model': official_state_dict(family, 'tiny')}
        expected_new = 'stages.0.blocks.1.fsla.qkv.weight' if family == 'swin' else 'stages.0.blocks.0.fsla.qkv.weight'
    src, dst = tmp_path / 'src.pth', tmp_path / 'dst.pth'
    torch.save(state, str(src))
    tool = [sys.executable, 'tools/model_converters/boat2mm.py', str(src), str(dst)]
    off = subprocess.run(tool, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert off.returncode == 0, off.stderr
    type_name = 'BOATSwinTransformer' if family == 'swin' else 'BOATCSWinTransformer'
    assert f"backbone=dict(type='{type_name}', arch='tiny', fsla_stages=())" in off.stdout
    converted = torch.load(str(dst))['state_dict']
    plain = (BOATSwinTransformer if family == 'swin' else BOATCSWinTransformer)(
        'tiny', fsla_stages=(), out_indices=(0, 1, 2, 3) if kind == 'toolbox_swin' else (3,))
    plain.load_state_dict(backbone_state_dict(converted), strict=True)
    new = subprocess.run(tool + ['--new-fsla'], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert new.returncode == 0, new.stderr
    assert f"backbone=dict(type='{type_name}', arch='tiny')" in new.stdout
    listed = new.stdout.split('start freshly initialised: ')[1].strip().split(', ')
    boat = (BOATSwinTransformer if family == 'swin' else BOATCSWinTransformer)(
        'tiny', out_indices=plain.out_indices)
    assert expected_new in listed and set(listed) == set(boat.state_dict()) - set(backbone_state_dict(converted))
    assert all('fsla' in k for k in listed)


def test_converter_resizes_swin_tables_for_another_window(tmp_path, swin_tiny_state):
    """--window-size 12: released window-7 BOAT-Swin weights for fine-tuning at 384; the config line says
    window_size=12 and the converted checkpoint loads into that backbone with every tensor."""
    src, dst = tmp_path / 'released.pth', tmp_path / 'window12.pth'
    torch.save(swin_tiny_state, str(src))
    result = subprocess.run([sys.executable, 'tools/model_converters/boat2mm.py', str(src), str(dst),
                             '--window-size', '12'], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert 'relative_position_bias_table tensors from window 7 to window 12 (bicubic)' in result.stdout
    assert 'window_size=12' in result.stdout
    backbone = BOATSwinTransformer('tiny', window_size=12,
                                   init_cfg=dict(type='Pretrained', checkpoint=str(dst), prefix='backbone.'))
    backbone.init_weights()
    assert backbone.stages[0].blocks[0].attn.relative_position_bias_table.shape == (23 * 23, 3)
    expected = swin_tiny_state['layers.1.blocks.1.attnC.qkv.weight']
    assert torch.equal(backbone.stages[1].blocks[1].fsla.qkv.weight, expected)


def test_converter_window_size_is_for_swin_only(tmp_path, cswin_tiny_state):
    src = tmp_path / 'cswin.pth'
    torch.save(cswin_tiny_state, str(src))
    with pytest.raises(ValueError, match='CSWin has no relative position table'):
        convert_checkpoint(str(src), str(tmp_path / 'out.pth'), window_size=12)
