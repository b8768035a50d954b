"""Checkpoint conversion with architecture inference (``tools/model_converters/boat2mm.py``).

The backbone a checkpoint needs is read off its shapes (``infer_backbone_cfg``): what shapes cannot tell
(CSWin heads and stripe widths) comes from the caller, or from the released model of the same size. The
key renaming itself is ``boat_mm.models.utils.ckpt_convert`` (pure functions on state dicts).
"""
import math
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..models.backbones import BOATCSWinTransformer, BOATSwinTransformer
from ..models.backbones.boat_swin import POSITION_EMBEDDING_KEY
from ..models.utils.ckpt_convert import (
    BACKBONE_TYPES,
    CSWIN,
    RELEASED_NUM_STAGES,
    SWIN,
    TOOLBOX_SWIN,
    backbone_state_dict,
    convert_state_dict,
    detect_family,
    detect_layout,
    load_released_checkpoint,
    resize_relative_position_tables,
)
from ..utils.file_io import save_checkpoint_atomic

__all__ = ['detect_arch', 'infer_backbone_cfg', 'format_backbone_cfg', 'new_parameter_names', 'convert_checkpoint']


_BLOCK_KEY = re.compile(r'^stages\.(\d+)\.blocks\.(\d+)\.')


def _depths(backbone: Dict[str, torch.Tensor]) -> Tuple[int, ...]:
    blocks: Dict[int, set] = {}
    for key in backbone:
        match = _BLOCK_KEY.match(key)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    stages = sorted(blocks)
    if stages != list(range(len(stages))) or any(blocks[s] != set(range(len(blocks[s]))) for s in stages):
        raise ValueError(f'the checkpoint\'s blocks are not numbered 0..n-1 in stages 0..k-1: '
                         f'{ {s: sorted(b) for s, b in blocks.items()} }')
    return tuple(len(blocks[s]) for s in stages)


def _fsla_stages(backbone: Dict[str, torch.Tensor]) -> Tuple[int, ...]:
    return tuple(sorted({int(m.group(1)) for k in backbone for m in [_BLOCK_KEY.match(k)] if m and '.fsla.' in k}))


def _mlp_ratio(backbone, embed_dims: int) -> float:
    hidden = backbone['stages.0.blocks.0.mlp.fc1.weight'].shape[0]
    return hidden / embed_dims


def _backbone_class(type_name: str):
    """Our backbone class of that ``type`` name."""
    return BOATSwinTransformer if type_name == BACKBONE_TYPES[SWIN] else BOATCSWinTransformer


def _named_arch(family: str, arch: dict) -> Optional[str]:
    """The released arch name with exactly these settings, if any."""
    for name, settings in _backbone_class(BACKBONE_TYPES[family]).arch_zoo.items():
        if len(name) > 1 and {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in settings.items()} == arch:
            return name
    return None


def _swin_cfg(backbone: Dict[str, torch.Tensor]) -> dict:
    proj = backbone['patch_embed.proj.weight']
    embed_dims, in_channels, patch_size = proj.shape[0], proj.shape[1], proj.shape[2]
    depths = _depths(backbone)
    num_heads, window_sizes = [], set()
    for stage in range(len(depths)):
        table = backbone[f'stages.{stage}.blocks.0.attn.relative_position_bias_table']
        num_heads.append(table.shape[1])
        window_sizes.add((math.isqrt(table.shape[0]) + 1) // 2)
    if len(window_sizes) != 1:
        raise ValueError(f'stages use different window sizes {sorted(window_sizes)}; BOAT-Swin uses one')
    arch = dict(embed_dims=embed_dims, depths=depths, num_heads=tuple(num_heads))
    cfg = dict(arch=_named_arch(SWIN, arch) or arch, in_channels=in_channels, patch_size=patch_size,
               window_size=window_sizes.pop(), mlp_ratio=_mlp_ratio(backbone, embed_dims),
               qkv_bias='stages.0.blocks.0.attn.qkv.bias' in backbone, fsla_stages=_fsla_stages(backbone))
    if 'patch_embed.norm.weight' not in backbone:
        cfg['patch_norm'] = False
    if POSITION_EMBEDDING_KEY in backbone:  # a stock Swin with use_abs_pos_embed=True, over a square grid
        side = math.isqrt(backbone[POSITION_EMBEDDING_KEY].shape[1])
        cfg.update(use_abs_pos_embed=True, pretrain_img_size=side * patch_size)
    return cfg


def _cswin_cfg(backbone: Dict[str, torch.Tensor], num_heads: Optional[Sequence[int]],
               split_sizes: Optional[Sequence[int]]) -> Tuple[dict, List[str]]:
    proj = backbone['patch_embed.proj.weight']
    embed_dims, in_channels = proj.shape[0], proj.shape[1]
    depths = _depths(backbone)
    dims = [backbone[f'stages.{i}.blocks.0.norm1.weight'].shape[0] for i in range(len(depths))]
    if dims != [embed_dims * 2 ** i for i in range(len(depths))]:
        raise ValueError(f'stage channels {dims} do not double from stage to stage, as BOAT-CSWin needs')
    notes = []
    released = {name: settings for name, settings in _backbone_class(BACKBONE_TYPES[CSWIN]).arch_zoo.items()
                if settings['embed_dims'] == embed_dims and tuple(settings['depths']) == depths}
    for name, given in (('num_heads', num_heads), ('split_sizes', split_sizes)):
        if given is None:
            if not released:
                raise ValueError(f'CSWin weights do not determine {name} (embed_dims={embed_dims}, depths={depths} '
                                 f'match no released model): pass it (--{name.replace("_", "-")})')
            notes.append(f'{name} cannot be read off the weights: taken from the released model of the same size')
    reference = next(iter(released.values()), {})
    arch = dict(embed_dims=embed_dims, depths=depths,
                num_heads=tuple(num_heads if num_heads is not None else reference['num_heads']),
                split_sizes=tuple(split_sizes if split_sizes is not None else reference['split_sizes']))
    cfg = dict(arch=_named_arch(CSWIN, arch) or arch, in_channels=in_channels,
               mlp_ratio=_mlp_ratio(backbone, embed_dims),
               qkv_bias='stages.0.blocks.0.qkv.bias' in backbone, fsla_stages=_fsla_stages(backbone))
    return cfg, notes


def infer_backbone_cfg(state_dict: Dict[str, torch.Tensor], num_heads: Optional[Sequence[int]] = None,
                       split_sizes: Optional[Sequence[int]] = None) -> Tuple[dict, List[str]]:
    """The backbone config (``type`` + arguments) that loads ``state_dict`` (any supported layout), and
    notes on what was not read off the weights. Swin heads come from the relative position tables;
    CSWin ``num_heads``/``split_sizes`` are not in any shape: pass them, or they are taken from the
    released model with the same width and depths (a note says so)."""
    return _infer_from_converted(detect_family(state_dict), convert_state_dict(state_dict), num_heads, split_sizes)


def _infer_from_converted(family: str, converted: Dict[str, torch.Tensor], num_heads: Optional[Sequence[int]],
                          split_sizes: Optional[Sequence[int]]) -> Tuple[dict, List[str]]:
    """``infer_backbone_cfg`` on a state dict already converted to our layout."""
    backbone = backbone_state_dict(converted)
    if family == SWIN:
        if num_heads is not None or split_sizes is not None:
            raise ValueError('Swin heads are read off the weights (relative position tables) and split sizes are '
                             'a CSWin setting: do not pass num_heads / split_sizes for a Swin checkpoint')
        cfg, notes = _swin_cfg(backbone), []
    else:
        cfg, notes = _cswin_cfg(backbone, num_heads, split_sizes)
    return dict(type=BACKBONE_TYPES[family], **cfg), notes


def detect_arch(state_dict: Dict[str, torch.Tensor]) -> Tuple[str, object]:
    """(family, arch) of a state dict: arch is the released name ('tiny', ...) or the inferred arch dict."""
    cfg, _ = infer_backbone_cfg(state_dict)
    return detect_family(state_dict), cfg['arch']


def format_backbone_cfg(cfg: dict) -> str:
    """``dict(type=..., ...)`` to paste into a config (settings equal to the backbone's defaults are left out)."""
    arch = cfg['arch']
    num_stages = len(arch['depths']) if isinstance(arch, dict) else RELEASED_NUM_STAGES
    defaults = dict(in_channels=3, patch_size=4, window_size=7, mlp_ratio=4.0, qkv_bias=True,
                    fsla_stages=_backbone_class(cfg['type']).released_fsla_stages(num_stages))
    items = [f'{k}={v!r}' for k, v in cfg.items() if not (k in defaults and v == defaults[k])]
    return 'backbone=dict(' + ', '.join(items) + ')'


def new_parameter_names(backbone_cfg: dict, converted: Dict[str, torch.Tensor]) -> List[str]:
    """Backbone parameters of ``backbone_cfg`` (e.g. with FSLA switched on) that ``converted`` lacks:
    what keeps its fresh initialisation when the weights are loaded into it."""
    cfg = dict(backbone_cfg)
    cls = _backbone_class(cfg.pop('type'))
    have = backbone_state_dict(converted)
    # the outputs the checkpoint has norms for (a classifier: the last stage only)
    out_indices = sorted(int(m.group(1)) for k in have for m in [re.match(r'^norm(\d+)\.weight$', k)] if m)
    model = cls(**cfg, out_indices=out_indices or tuple(range(RELEASED_NUM_STAGES)))
    return [name for name in model.state_dict() if name not in have]



def convert_checkpoint(src: str, dst: str, use_ema: bool = False, new_fsla: bool = False,
                       num_heads: Optional[Sequence[int]] = None,
                       split_sizes: Optional[Sequence[int]] = None, window_size: Optional[int] = None) -> Dict:
    """Convert a checkpoint file of the family into an mmengine-style one; returns a summary with the
    backbone config that loads it. ``new_fsla``: the source has no FSLA (official Swin / CSWin, OpenMMLab
    Swin) and is meant for BOAT with FSLA freshly initialised: the config switches FSLA on (released
    stages) and the summary lists the new parameters. ``window_size``: a Swin checkpoint's relative position
    bias tables resized (bicubic) for that window, e.g. 12 to fine-tune at 384 from window-7 weights."""
    state_dict = load_released_checkpoint(src, use_ema)
    layout = detect_layout(state_dict)
    family = detect_family(state_dict)
    converted = convert_state_dict(state_dict)
    backbone_cfg, notes = _infer_from_converted(family, converted, num_heads, split_sizes)
    if window_size is not None and window_size != backbone_cfg.get('window_size'):
        if family == CSWIN:
            raise ValueError('--window-size is for Swin checkpoints: CSWin has no relative position table '
                             '(its positional term, LePE, is a convolution that fits any stripe)')
        resized = resize_relative_position_tables(converted, window_size)
        notes.append(f'resized {len(resized)} relative_position_bias_table tensors from window '
                     f'{backbone_cfg["window_size"]} to window {window_size} (bicubic)')
        backbone_cfg['window_size'] = window_size
    new_parameters = []
    if new_fsla:
        if backbone_cfg['fsla_stages']:
            raise ValueError(f'{src} already has FSLA weights (stages {backbone_cfg["fsla_stages"]}); '
                             '--new-fsla is for plain Swin / CSWin weights')
        backbone_cfg.pop('fsla_stages')  # the released FSLA placement (the backbone's default)
        new_parameters = new_parameter_names(backbone_cfg, converted)
    if layout == TOOLBOX_SWIN:
        source = 'OpenMMLab (mmdet / mmseg / mmpretrain) Swin'
    elif new_fsla or not backbone_cfg['fsla_stages']:
        source = 'official ' + ('CSWin' if family == CSWIN else 'Swin')
    else:
        source = 'released BOAT-' + ('CSWin' if family == CSWIN else 'Swin')
    meta = dict(source=osp.basename(src), layout=layout, family=family, backbone=backbone_cfg, ema=use_ema,
                converter='boat_mm.apis.checkpoint_conversion')
    save_checkpoint_atomic(dict(state_dict=converted, meta=meta), dst)
    arch = backbone_cfg['arch']
    return dict(meta, arch=arch if isinstance(arch, str) else 'custom', description=source,
                num_tensors=len(converted), dropped=len(state_dict) - len(converted), notes=notes,
                new_parameters=new_parameters, config_line=format_backbone_cfg(backbone_cfg))
