"""What both BOAT backbones share: the OpenMMLab backbone contract around the stages."""
import logging
import re
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule, initialize
from mmengine.model.weight_init import trunc_normal_

import torch.utils.checkpoint as cp

from .feature_space_attention import FeatureSpaceLocalAttention
from .layers import NORM_LAYERS, DropPath, Mlp, freeze, tokens_to_nchw

__all__ = ['BOATBackbone', 'BilateralBlock']

# Std of the truncated-normal init of Linear weights, as in Swin/CSWin.
LINEAR_INIT_STD = 0.02


# Toolboxes whose backbones return only the last stage by default (classification).
LAST_STAGE_ONLY_SCOPES = ('mmpretrain',)


def default_out_indices(num_stages: int) -> Tuple[int, ...]:
    """The ``out_indices`` default of the toolbox building the backbone, as each defines it for its Swin:
    mmpretrain returns the last stage, mmdet and mmseg every stage (also the default outside any scope)."""
    from mmengine.registry import DefaultScope
    scope = DefaultScope.get_current_instance()
    if scope is not None and scope.scope_name in LAST_STAGE_ONLY_SCOPES:
        return (num_stages - 1,)
    return tuple(range(num_stages))


class BOATBackbone(BaseModule):
    """Base of the BOAT backbones: argument checks, ``norm{i}`` outputs, freezing, ``norm_eval``, init.

    Subclasses build ``self.patch_embed`` and ``self.stages`` and call ``_add_output_norms``."""

    def _setup_outputs(self, num_features: Sequence[int], out_indices: Union[None, int, Sequence[int]],
                       frozen_stages: int, norm_eval: bool, in_channels: int) -> None:
        num_stages = len(num_features)
        if out_indices is None:
            out_indices = default_out_indices(num_stages)
        if isinstance(out_indices, int):
            out_indices = (out_indices,)
        out_indices = tuple(i + num_stages if i < 0 else i for i in out_indices)
        if not out_indices or any(not 0 <= i < num_stages for i in out_indices):
            raise ValueError(f'out_indices must be stage indices in [0, {num_stages}), got {out_indices}')
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {num_stages}], got {frozen_stages}')
        self.num_features = list(num_features)
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.in_channels = in_channels

    def _add_output_norms(self) -> None:
        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(self.num_features[i]))
        self._freeze_stages()

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'{type(self).__name__} expects images of shape (B, {self.in_channels}, H, W), '
                             f'got {tuple(x.shape)}')

    def _output(self, stage_index: int, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        """Stage output through its ``norm{i}``, as an NCHW map."""
        return tokens_to_nchw(getattr(self, f'norm{stage_index}')(x), hw_shape)

    def init_weights(self):
        """Fresh initialisation, then the ``init_cfg``. A Pretrained checkpoint goes through
        ``boat_mm.converters.pretrained_backbone_weights``: ours loads as is (after ``prefix``), an upstream
        layout (official Swin / CSWin, released BOAT, OpenMMLab Swin, e.g. the checkpoints that stock
        mmdet / mmseg Swin configs name) is converted first; what it lacks keeps its fresh initialisation
        and is listed in the log."""
        self._init_fresh_weights()
        if self.init_cfg is None:
            return
        init_cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        others = [cfg for cfg in init_cfgs if cfg.get('type') != 'Pretrained']
        if others:
            initialize(self, others)
        for cfg in init_cfgs:
            if cfg.get('type') == 'Pretrained':
                self._load_pretrained(cfg['checkpoint'], cfg.get('prefix'))
        self._is_init = True

    def _load_pretrained(self, path: str, prefix: Optional[str]) -> None:
        """Load backbone weights; output norms the backbone does not build are skipped, anything else that
        does not fit is an error naming it, never silently dropped."""
        from ..converters import BOAT_MM, pretrained_backbone_weights
        weights, layout = pretrained_backbone_weights(path, prefix)
        own = self.state_dict()
        unused_norms = [k for k in weights if k not in own and re.match(r'^norm\d+\.', k)]
        unexpected = [k for k in weights if k not in own and k not in unused_norms]
        mismatched = [f'{k}: checkpoint {tuple(weights[k].shape)}, model {tuple(own[k].shape)}'
                      for k in weights if k in own and weights[k].shape != own[k].shape]
        if unexpected or mismatched:
            raise ValueError(f'{type(self).__name__}: {path} ({layout} layout) does not fit this backbone: '
                             f'{len(unexpected)} unexpected tensors {unexpected[:5]}, {len(mismatched)} of another '
                             f'shape {mismatched[:5]}; check the architecture arguments and fsla_stages')
        for key in unused_norms:
            del weights[key]
        self.load_state_dict(weights, strict=False)
        new = [k for k in own if k not in weights]
        how = 'as is' if layout == BOAT_MM else f'converted from the {layout} layout'
        print_log(f'{type(self).__name__}: loaded {len(weights)} tensors from {path} ({how}); {len(new)} '
                  f'parameters not in the checkpoint keep their fresh initialisation: {", ".join(new) or "none"}'
                  + (f'; skipped output norms this backbone does not build: {", ".join(unused_norms)}'
                     if unused_norms else ''), logger='current', level=logging.INFO)

    def _init_fresh_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=LINEAR_INIT_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif hasattr(module, 'relative_position_bias_table'):
                trunc_normal_(module.relative_position_bias_table, std=LINEAR_INIT_STD)

    def _freeze_stages(self) -> None:
        """``frozen_stages = k`` freezes the patch embedding and stages 0..k-1 with their norms."""
        if self.frozen_stages >= 0:
            freeze(self.patch_embed)
        for i in range(self.frozen_stages):
            freeze(self.stages[i])
            if i in self.out_indices:
                freeze(getattr(self, f'norm{i}'))

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, NORM_LAYERS):
                    module.eval()
        return self


class BilateralBlock(nn.Module):
    """What both BOAT blocks share around their image-space attention: the optional FSLA with its own
    LayerNorm (``norm_fsla``), the MLP with ``norm2``, drop path, and gradient checkpointing.

    Subclasses build their image-space attention, call ``_build_shared`` and implement ``_forward``."""

    def _build_shared(self, embed_dims: int, num_heads: int, use_fsla: bool, fsla_cfg: Optional[dict],
                      qkv_bias: bool, attn_drop: float, fsla_proj_drop: float, mlp_ratio: float, drop: float,
                      drop_path: float, with_cp: bool) -> None:
        self.with_cp = with_cp
        if use_fsla:
            self.norm_fsla = nn.LayerNorm(embed_dims)
            self.fsla = FeatureSpaceLocalAttention(embed_dims, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                                   proj_drop=fsla_proj_drop, **(fsla_cfg or {}))
        else:
            self.fsla = None
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.mlp = Mlp(embed_dims, int(embed_dims * mlp_ratio), drop)

    def _forward(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, hw_shape, use_reentrant=False)
        return self._forward(x, hw_shape)
