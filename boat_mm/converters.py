"""Released BOAT checkpoints -> boat_mm keys, as pure functions on state dicts.

Our parameter names follow the released ones, so conversion is a short rename table per family plus
dropping the buffers we rebuild (relative position index, shifted-window masks). The result has
``backbone.*`` and ``head.fc.*`` keys: an mmpretrain ``ImageClassifier`` loads it strictly, and mmdet /
mmseg backbones load it through ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.
"""
import argparse
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch
from .compat import load_checkpoint_file, save_checkpoint_atomic

__all__ = ['detect_family', 'detect_arch', 'convert_boat_state_dict', 'load_released_checkpoint',
           'convert_checkpoint', 'SWIN', 'CSWIN']

SWIN, CSWIN = 'boat_swin', 'boat_cswin'

# Buffers of the released models that our modules rebuild instead of loading.
_DROPPED = re.compile(r'(relative_position_index|attn_mask)$')

# (pattern, replacement) applied in order to every key.
_RENAMES: Dict[str, List[Tuple[str, str]]] = {
    SWIN: [
        (r'^layers\.', 'stages.'),
        (r'\.attnC\.', '.fsla.'),
        (r'\.norm4\.', '.norm_fsla.'),
        (r'\.get_v\.', '.lepe.'),
        (r'^norm\.', 'norm3.'),
    ],
    CSWIN: [
        (r'^stage1_conv_embed\.0\.', 'patch_embed.proj.'),
        (r'^stage1_conv_embed\.2\.', 'patch_embed.norm.'),
        (r'^stage(\d)\.(\d+)\.', lambda m: f'stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.'),
        (r'^merge(\d)\.conv\.', r'stages.\1.downsample.proj.'),
        (r'^merge(\d)\.norm\.', r'stages.\1.downsample.norm.'),
        (r'\.content_attn\.', '.fsla.'),
        (r'(blocks\.\d+)\.norm3\.', r'\1.norm_fsla.'),
        (r'\.get_v\.', '.lepe.'),
        (r'^norm\.', 'norm3.'),
    ],
}

# Keys that identify each family.
_SIGNATURES = {SWIN: 'layers.0.blocks.0.attn.qkv.weight', CSWIN: 'stage1_conv_embed.0.weight'}


def detect_family(state_dict: Dict[str, torch.Tensor]) -> str:
    """'boat_swin' or 'boat_cswin' from the released key layout; ValueError otherwise."""
    for family, key in _SIGNATURES.items():
        if key in state_dict:
            return family
    sample = sorted(state_dict)[:5]
    raise ValueError(f'not a released BOAT checkpoint: expected a key {list(_SIGNATURES.values())}, '
                     f'found {len(state_dict)} keys such as {sample}')


def convert_boat_state_dict(state_dict: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """Rename a released BOAT state dict to boat_mm's classifier layout (``backbone.*``, ``head.fc.*``)."""
    family = detect_family(state_dict)
    converted = OrderedDict()
    for key, value in state_dict.items():
        if _DROPPED.search(key):
            continue
        if key.startswith('head.'):
            converted['head.fc.' + key[len('head.'):]] = value
            continue
        new_key = key
        for pattern, replacement in _RENAMES[family]:
            new_key = re.sub(pattern, replacement, new_key)
        converted['backbone.' + new_key] = value
    return converted


# (embed_dims, blocks in the third stage) -> arch, per family.
_ARCH_SIGNATURES = {
    SWIN: {(96, 6): 'tiny', (96, 18): 'small', (128, 18): 'base'},
    CSWIN: {(64, 21): 'tiny', (64, 32): 'small', (96, 32): 'base'},
}
_EMBED_KEY = {SWIN: 'layers.0.blocks.0.norm1.weight', CSWIN: 'stage1_conv_embed.0.weight'}
_THIRD_STAGE_BLOCK = {SWIN: re.compile(r'^layers\.2\.blocks\.(\d+)\.'), CSWIN: re.compile(r'^stage3\.(\d+)\.')}


def detect_arch(state_dict: Dict[str, torch.Tensor]) -> Tuple[str, str]:
    """(family, arch) of a released state dict, e.g. ('boat_cswin', 'tiny'); ValueError if unknown."""
    family = detect_family(state_dict)
    embed_dims = state_dict[_EMBED_KEY[family]].shape[0]
    blocks = {int(m.group(1)) for k in state_dict for m in [_THIRD_STAGE_BLOCK[family].match(k)] if m}
    key = (embed_dims, len(blocks))
    if key not in _ARCH_SIGNATURES[family]:
        known = {v: k for k, v in _ARCH_SIGNATURES[family].items()}
        raise ValueError(f'{family} checkpoint with embed_dims={embed_dims} and {len(blocks)} third-stage blocks '
                         f'matches no released arch; expected (embed_dims, blocks) in {known}')
    return family, _ARCH_SIGNATURES[family][key]


# What released BOAT checkpoints hold besides tensors: mmengine/numpy scalars (timm's ``metric``),
# argparse args (timm's ``args``), and BOAT-Swin's yacs ``config``. yacs need not be installed: its
# ``CfgNode`` (a dict subclass) is read as an inert OrderedDict, so none of its code runs.
RELEASED_CHECKPOINT_EXTRA_GLOBALS = [argparse.Namespace, (OrderedDict, 'yacs.config.CfgNode')]


def load_released_checkpoint(path: str, use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """The model state dict of a released BOAT checkpoint in any of its wrappings.

    BOAT-Swin ``.pth``: ``{'model': ...}``; BOAT-CSWin ``.pth.tar`` (timm): ``{'state_dict': ...,
    'state_dict_ema': ...}``; or a bare state dict. ``use_ema`` picks the EMA weights (error if absent).
    Loading is ``torch.load(weights_only=True)`` with an allow-list: a pickle payload is refused."""
    checkpoint = load_checkpoint_file(path, extra_globals=RELEASED_CHECKPOINT_EXTRA_GLOBALS)
    if not isinstance(checkpoint, dict):
        raise ValueError(f'{path}: expected a dict, found {type(checkpoint).__name__}')
    if use_ema:
        if 'state_dict_ema' not in checkpoint:
            raise ValueError(f'{path}: --ema asked for, but the checkpoint has no state_dict_ema '
                             f'(top-level keys: {sorted(checkpoint)})')
        return checkpoint['state_dict_ema']
    for wrapper in ('model', 'state_dict'):
        if isinstance(checkpoint.get(wrapper), dict):
            return checkpoint[wrapper]
    if all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint
    raise ValueError(f'{path}: found top-level keys {sorted(checkpoint)[:10]}; expected a released BOAT '
                     "checkpoint ('model', 'state_dict'/'state_dict_ema', or a bare state dict)")


def convert_checkpoint(src: str, dst: str, use_ema: bool = False) -> Dict:
    """Convert a released checkpoint file into an mmengine-style one; returns a summary."""
    state_dict = load_released_checkpoint(src, use_ema)
    family, arch = detect_arch(state_dict)
    converted = convert_boat_state_dict(state_dict)
    meta = dict(source=osp.basename(src), family=family, arch=arch, ema=use_ema,
                converter='boat_mm.converters')
    save_checkpoint_atomic(dict(state_dict=converted, meta=meta), dst)
    return dict(meta, num_tensors=len(converted), dropped=len(state_dict) - len(converted))
