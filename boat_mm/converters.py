"""Released BOAT checkpoints -> boat_mm keys, as pure functions on state dicts.

Our parameter names follow the released ones, so conversion is a short rename table per family plus
dropping the buffers we rebuild (relative position index, shifted-window masks). The result has
``backbone.*`` and ``head.fc.*`` keys: an mmpretrain ``ImageClassifier`` loads it strictly, and mmdet /
mmseg backbones load it through ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.
"""
import re
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch

__all__ = ['detect_family', 'convert_boat_state_dict', 'SWIN', 'CSWIN']

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
