"""Checkpoints of the Swin / CSWin / BOAT family -> boat_mm keys, as pure functions on state dicts.

Layouts understood (``detect_layout``):

- ``boat_swin``: the released BOAT-Swin checkpoints and the official Swin ImageNet ones
  (``swin_tiny_patch4_window7_224.pth``): the same names, official Swin simply has no FSLA (``attnC``);
- ``boat_cswin``: the released BOAT-CSWin checkpoints and the official CSWin ImageNet ones
  (``cswin_tiny_224.pth``), likewise without FSLA (``content_attn``);
- ``toolbox_swin``: the ``SwinTransformer`` of mmdet, mmseg and mmpretrain (``w_msa``/``ffn`` names, patch
  merging in ``nn.Unfold`` channel order), with or without the ``backbone.`` prefix.

Our parameter names follow the released ones, so conversion is a short rename table per layout plus
dropping the buffers we rebuild (relative position index, shifted-window masks). The result has
``backbone.*`` (and, for classifiers, ``head.fc.*``) keys: an mmpretrain ``ImageClassifier`` loads it
strictly, and mmdet / mmseg backbones load it through ``init_cfg=dict(type='Pretrained', ..., prefix='backbone.')``.
This module imports no backbone (the backbones import it to load ``Pretrained`` weights); reading the
architecture off a checkpoint's shapes, which needs the backbones' ``arch_zoo``, is
``boat_mm.apis.checkpoint_conversion``.
"""
import argparse
import math
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ...utils.checkpoint import load_checkpoint_file

__all__ = ['detect_layout', 'detect_family', 'convert_state_dict', 'convert_boat_state_dict',
           'convert_toolbox_swin_state_dict', 'backbone_state_dict', 'pretrained_backbone_weights',
           'load_released_checkpoint', 'RELEASED_CHECKPOINT_EXTRA_GLOBALS', 'SWIN', 'CSWIN', 'TOOLBOX_SWIN',
           'BOAT_MM', 'BACKBONE_TYPES', 'BACKBONE_PREFIX', 'RELEASED_NUM_STAGES', 'resize_relative_position_tables',
           'table_window_size', 'RELATIVE_TABLE_SUFFIX']

SWIN, CSWIN, TOOLBOX_SWIN, BOAT_MM = 'boat_swin', 'boat_cswin', 'toolbox_swin', 'boat_mm'
BACKBONE_TYPES = {SWIN: 'BOATSwinTransformer', CSWIN: 'BOATCSWinTransformer'}
BACKBONE_PREFIX = 'backbone.'
RELEASED_NUM_STAGES = 4
CLASSIFIER_HEAD_PREFIX = 'head.fc.'

# Buffers of the upstream models that our modules rebuild instead of loading.
_DROPPED = re.compile(r'(relative_position_index|relative_coords_table|attn_mask)$')

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
    TOOLBOX_SWIN: [
        (r'^patch_embed\.projection\.', 'patch_embed.proj.'),
        (r'\.attn\.w_msa\.', '.attn.'),
        (r'\.ffn\.layers\.0\.0\.', '.mlp.fc1.'),
        # mmcv FFN with num_fcs > 2: the Linears between fc1 and the last one
        (r'\.ffn\.layers\.(\d+)\.0\.', lambda m: f'.mlp.hidden_fcs.{int(m.group(1)) - 1}.'),
        (r'\.ffn\.layers\.\d+\.(weight|bias)$', r'.mlp.fc2.\1'),
        (r'\.ffn\.gamma2\.weight$', '.mlp.layer_scale'),  # mmcv FFN's layer_scale_init_value > 0
        (r'^norm\.', 'norm3.'),  # an official classifier norm some converters leave as it was
    ],
}

# A key that identifies each layout (toolbox keys are matched after removing ``backbone.``).
_SIGNATURES = {SWIN: 'layers.0.blocks.0.attn.qkv.weight', CSWIN: 'stage1_conv_embed.0.weight',
               TOOLBOX_SWIN: 'stages.0.blocks.0.attn.w_msa.qkv.weight'}
_OURS_SIGNATURE = 'stages.0.blocks.0.attn.qkv.weight'


def _strip_backbone_prefix(key: str) -> str:
    return key[len(BACKBONE_PREFIX):] if key.startswith(BACKBONE_PREFIX) else key


def detect_layout(state_dict: Dict[str, torch.Tensor]) -> str:
    """'boat_swin', 'boat_cswin', 'toolbox_swin' or 'boat_mm' (ours) from the key names; ValueError otherwise."""
    for layout, key in _SIGNATURES.items():
        if key in state_dict or BACKBONE_PREFIX + key in state_dict:
            return layout
    if _OURS_SIGNATURE in state_dict or BACKBONE_PREFIX + _OURS_SIGNATURE in state_dict:
        return BOAT_MM
    sample = sorted(state_dict)[:5]
    raise ValueError(f'not a released BOAT checkpoint nor an official / OpenMMLab Swin or CSWin one: expected a key '
                     f'{list(_SIGNATURES.values())}, found {len(state_dict)} keys such as {sample}')


def _upstream_layout(state_dict: Dict[str, torch.Tensor]) -> str:
    """``detect_layout`` for conversion: our own layout needs none, and says so."""
    layout = detect_layout(state_dict)
    if layout == BOAT_MM:
        raise ValueError('this is already a boat_mm checkpoint: load it directly (init_cfg Pretrained with '
                         "prefix='backbone.', or load_from), no conversion needed")
    return layout


def detect_family(state_dict: Dict[str, torch.Tensor]) -> str:
    """'boat_swin' or 'boat_cswin': which of our backbones an upstream checkpoint is for."""
    return CSWIN if _upstream_layout(state_dict) == CSWIN else SWIN


def _unfold_to_concat_order(tensor: torch.Tensor, kernel: int = 2) -> torch.Tensor:
    """Patch-merging channels from ``nn.Unfold`` order (channel-major: c0 at (0,0), (0,1), (1,0), (1,1), c1 ...)
    to the official concatenation order (position-major: x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2],
    x[1::2, 1::2]), along the last dim; a ``kernel`` x ``kernel`` merging likewise (positions column by
    column, as ``boat_swin.PatchMerging`` concatenates them)."""
    lead = tensor.shape[:-1]
    channels = tensor.shape[-1] // kernel ** 2
    by_position = tensor.reshape(*lead, channels, kernel, kernel)  # (..., c, row, col) in unfold order
    # ours: (col, row, c), i.e. column-major over the patch, channels innermost
    return by_position.permute(*range(len(lead)), -1, -2, -3).reshape(*lead, kernel ** 2 * channels)


def _merging_kernel(state_dict: Dict[str, torch.Tensor], key: str, reduction: torch.Tensor) -> int:
    """The kernel side of a toolbox patch merging (``key`` without ``backbone.``), from its input width (the
    ``reduction`` weight's) over its stage's width (the stage's first qkv input): 2 for every stock Swin,
    another with mmpretrain's ``downsample_cfg``."""
    stage = key.split('.')[1]
    qkv = re.compile(rf'(^|\.)stages\.{stage}\.blocks\.0\.attn\.w_msa\.qkv\.weight$')
    qkv_key = next((k for k in state_dict if qkv.search(k)), None)
    if qkv_key is None:
        return 2
    channels = state_dict[qkv_key].shape[1]
    inputs = reduction.shape[1]
    kernel = math.isqrt(inputs // channels)
    if kernel * kernel * channels != inputs:
        raise ValueError(f'{key}: {inputs} inputs are not a square kernel over {channels} channels')
    return kernel


def _rename(key: str, layout: str) -> str:
    for pattern, replacement in _RENAMES[layout]:
        key = re.sub(pattern, replacement, key)
    return key


def convert_boat_state_dict(state_dict: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """A released BOAT or official Swin / CSWin state dict -> boat_mm's classifier layout
    (``backbone.*``, ``head.fc.*``). Tensors are passed through untouched."""
    layout = _upstream_layout(state_dict)
    if layout == TOOLBOX_SWIN:
        raise ValueError('an OpenMMLab Swin checkpoint: use convert_toolbox_swin_state_dict (or convert_state_dict)')
    converted = OrderedDict()
    for key, value in state_dict.items():
        if _DROPPED.search(key):
            continue
        if key.startswith('head.'):
            converted[CLASSIFIER_HEAD_PREFIX + key[len('head.'):]] = value
            continue
        converted[BACKBONE_PREFIX + _rename(key, layout)] = value
    return converted


def convert_toolbox_swin_state_dict(state_dict: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """An mmdet / mmseg / mmpretrain ``SwinTransformer`` state dict (backbone alone or a whole model with
    ``backbone.*``) -> boat_mm layout. Keys of other model parts (neck, decode heads...) are left out,
    except an mmpretrain classifier's ``head.fc.*``; patch-merging weights are reordered from
    ``nn.Unfold`` channel order to ours."""
    prefixed = any(k.startswith(BACKBONE_PREFIX) for k in state_dict)
    converted = OrderedDict()
    for original, value in state_dict.items():
        if original.startswith(CLASSIFIER_HEAD_PREFIX):
            converted[original] = value
            continue
        if prefixed and not original.startswith(BACKBONE_PREFIX):
            continue
        key = _strip_backbone_prefix(original)
        if _DROPPED.search(key):
            continue
        new_key = _rename(key, TOOLBOX_SWIN)
        if re.match(r'^stages\.\d+\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)$', new_key):
            reduction = state_dict[re.sub(r'norm\.(weight|bias)$', 'reduction.weight', original)]
            value = _unfold_to_concat_order(value, _merging_kernel(state_dict, key, reduction))
        converted[BACKBONE_PREFIX + new_key] = value
    return converted


def convert_state_dict(state_dict: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """Any supported upstream layout -> boat_mm layout (``backbone.*`` and, for classifiers, ``head.fc.*``)."""
    if _upstream_layout(state_dict) == TOOLBOX_SWIN:
        return convert_toolbox_swin_state_dict(state_dict)
    return convert_boat_state_dict(state_dict)


def backbone_state_dict(converted: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """The ``backbone.*`` part of a converted state dict, without the prefix."""
    return OrderedDict((k[len(BACKBONE_PREFIX):], v) for k, v in converted.items() if k.startswith(BACKBONE_PREFIX))


def pretrained_backbone_weights(path: str, prefix: Optional[str] = None) -> Tuple[Dict[str, torch.Tensor], str]:
    """(backbone weights, layout) of a checkpoint named by a backbone's Pretrained ``init_cfg``.

    Ours: the keys under ``prefix`` (e.g. 'backbone.'), or, without a prefix, the keys as they are (a
    ``backbone.`` prefix is dropped when every backbone key carries it). An upstream layout: converted."""
    state_dict = load_released_checkpoint(path)
    layout = detect_layout(state_dict)
    if layout != BOAT_MM:
        return backbone_state_dict(convert_state_dict(state_dict)), layout
    if prefix:
        weights = OrderedDict((k[len(prefix):], v) for k, v in state_dict.items() if k.startswith(prefix))
        if not weights:
            raise ValueError(f'{path}: no key starts with the init_cfg prefix {prefix!r} '
                             f'(keys such as {sorted(state_dict)[:3]})')
        return weights, layout
    if _OURS_SIGNATURE not in state_dict:
        return backbone_state_dict(state_dict), layout
    return OrderedDict(state_dict), layout


# What released BOAT checkpoints hold besides tensors: mmengine/numpy scalars (timm's ``metric``),
# argparse args (timm's ``args``), and BOAT-Swin's yacs ``config``. yacs need not be installed: its
# ``CfgNode`` (a dict subclass) is read as an inert OrderedDict, so none of its code runs.
RELEASED_CHECKPOINT_EXTRA_GLOBALS = [argparse.Namespace, (OrderedDict, 'yacs.config.CfgNode')]


def load_released_checkpoint(path: str, use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """The model state dict of a checkpoint in any of its wrappings.

    BOAT-Swin / Swin ``.pth``: ``{'model': ...}``; BOAT-CSWin / CSWin ``.pth.tar`` (timm): ``{'state_dict': ...,
    'state_dict_ema': ...}``; OpenMMLab: ``{'state_dict': ..., 'meta': ...}``; or a bare state dict.
    ``use_ema`` picks the EMA weights (error if absent). Loading is ``torch.load(weights_only=True)`` with an
    allow-list: a pickle payload is refused."""
    if '://' in path:  # a URL (e.g. the official Swin weights in mmdet's stock configs): mmengine downloads it
        from mmengine.runner import CheckpointLoader
        checkpoint = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    else:
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
    raise ValueError(f'{path}: found top-level keys {sorted(checkpoint)[:10]}; expected a checkpoint '
                     "('model', 'state_dict'/'state_dict_ema', or a bare state dict)")


RELATIVE_TABLE_SUFFIX = 'relative_position_bias_table'


def table_window_size(table: torch.Tensor) -> int:
    """The Swin window w of a relative position bias table of (2w - 1) ** 2 rows."""
    side = int(round(table.shape[0] ** 0.5))
    if side * side != table.shape[0] or side % 2 != 1:
        raise ValueError(f'a relative position bias table has (2w - 1)^2 rows, got {table.shape[0]}')
    return (side + 1) // 2


def resize_relative_position_tables(weights: Dict[str, torch.Tensor], window_size: int) -> List[str]:
    """Resize, in place, every Swin relative position bias table of ``weights`` that is not for windows of
    ``window_size`` (fine-tuning at another resolution: 224 -> 384 takes the window from 7 to 12): each head's
    (2w - 1) x (2w - 1) grid of biases is resampled bicubically (align_corners=False) to the new grid, as
    official Swin, mmdet's and mmseg's Swin do. (The index buffers are no checkpoint content: each block
    rebuilds its own from its window.) Returns the keys resized."""
    side = 2 * window_size - 1
    resized = []
    for key, table in weights.items():
        if not key.endswith(RELATIVE_TABLE_SUFFIX) or table.shape[0] == side * side:
            continue
        source = 2 * table_window_size(table) - 1
        heads = table.shape[1]
        grid = table.t().reshape(1, heads, source, source).to(torch.float64)
        grid = F.interpolate(grid, size=(side, side), mode='bicubic', align_corners=False)
        weights[key] = grid.reshape(heads, side * side).t().to(table.dtype).contiguous()
        resized.append(key)
    return resized
