"""What both BOAT backbones share: the OpenMMLab backbone contract around the stages."""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_

import torch.utils.checkpoint as cp

from .feature_space_attention import FeatureSpaceLocalAttention
from .layers import NORM_LAYERS, DropPath, Mlp, freeze, tokens_to_nchw

__all__ = ['BOATBackbone', 'BilateralBlock']

# Std of the truncated-normal init of Linear weights, as in Swin/CSWin.
LINEAR_INIT_STD = 0.02


class BOATBackbone(BaseModule):
    """Base of the BOAT backbones: argument checks, ``norm{i}`` outputs, freezing, ``norm_eval``, init.

    Subclasses build ``self.patch_embed`` and ``self.stages`` and call ``_add_output_norms``."""

    def _setup_outputs(self, num_features: Sequence[int], out_indices: Union[int, Sequence[int]],
                       frozen_stages: int, norm_eval: bool, in_channels: int) -> None:
        num_stages = len(num_features)
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
        if self.init_cfg is not None:
            super().init_weights()
            return
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
