"""What both BOAT backbones share: the OpenMMLab backbone contract around the stages."""
import logging
import re
from abc import ABCMeta, abstractmethod
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.logging import print_log
from mmengine.model import BaseModule, initialize
from mmengine.model.weight_init import trunc_normal_

from ..layers.feature_space_attention import FeatureSpaceLocalAttention, check_fsla_settings
from ..layers.transformer_layers import (
    LAYER_NORM_CFG,
    NORM_LAYERS,
    DropPath,
    Mlp,
    build_token_norm,
    freeze,
    tokens_to_nchw,
)
from ..utils.ckpt_convert import (
    BOAT_MM,
    RELATIVE_TABLE_SUFFIX,
    pretrained_backbone_weights,
    resize_relative_position_tables,
    table_window_size,
)
from ..utils.toolbox_args import building_scope, check_in_channels, resolve_fsla_cfg, resolve_fsla_stages

__all__ = ['BOATBackbone', 'BilateralBlock', 'default_out_indices', 'stages_frozen_by', 'build_branch_dropout']

# Std of the truncated-normal init of Linear weights, as in Swin/CSWin.
LINEAR_INIT_STD = 0.02


# Toolboxes whose backbones return only the last stage by default (classification).
LAST_STAGE_ONLY_SCOPES = ('mmpretrain',)
# Toolboxes whose Swin freezes stages 0..k for frozen_stages = k (the others: 0..k-1).
INCLUSIVE_FROZEN_STAGES_SCOPES = ('mmpretrain',)


def default_out_indices(num_stages: int) -> Tuple[int, ...]:
    """The ``out_indices`` default of the toolbox building the backbone, as each defines it for its Swin:
    mmpretrain returns the last stage, mmdet and mmseg every stage (also the default outside any scope)."""
    if building_scope() in LAST_STAGE_ONLY_SCOPES:
        return (num_stages - 1,)
    return tuple(range(num_stages))


def stages_frozen_by(frozen_stages: int) -> int:
    """How many stages ``frozen_stages = k`` freezes, in the meaning of the toolbox building the backbone,
    so that a swapped-in BOAT freezes what the stock Swin of the same config froze: mmdet and mmseg (and
    plain Python) freeze stages 0..k-1 (``k = 0``: the patch embedding only); mmpretrain's Swin freezes
    stages 0..k (``k = 0``: the patch embedding and stage 0). ``k = -1`` freezes nothing in both."""
    if frozen_stages < 0:
        return 0
    return frozen_stages + 1 if building_scope() in INCLUSIVE_FROZEN_STAGES_SCOPES else frozen_stages


class BOATBackbone(BaseModule):
    """Base of the BOAT backbones: argument checks, ``norm{i}`` outputs, freezing, ``norm_eval``, init, layer
    depths for layer-wise lr decay.

    Subclasses build ``self.patch_embed`` and ``self.stages`` (each with ``blocks`` and an optional
    ``downsample``) and call ``_add_output_norms``."""

    # Whether a stage's ``downsample`` runs before its blocks (CSWin's convolution between stages) or after
    # them (Swin's patch merging): a merge takes the depth of the last block before it.
    downsample_before_blocks = False

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """(depth of ``param_name``, number of depths), mmpretrain's meaning (its Swin's ``get_layer_depth``),
        for layer-wise lr decay (mmpretrain's ``LearningRateDecayOptimWrapperConstructor``): the patch
        embedding at depth 0, block j of all blocks at depth j + 1 (its FSLA and norms with it), a merge at the
        depth of the last block before it, everything else (the output norms ``norm{i}``, and names outside
        ``prefix``: necks, heads) at the last depth, ``sum(depths) + 1``."""
        depths = [len(stage.blocks) for stage in self.stages]
        num_layers = sum(depths) + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        parts = param_name[len(prefix):].split('.')
        if parts[0] == 'patch_embed':
            return 0, num_layers
        if parts[0] == 'stages' and len(parts) > 3 and parts[2] == 'blocks':
            stage = int(parts[1])
            return sum(depths[:stage]) + int(parts[3]) + 1, num_layers
        if parts[0] == 'stages' and len(parts) > 2 and parts[2] == 'downsample':
            stage = int(parts[1])
            return sum(depths[:stage] if self.downsample_before_blocks else depths[:stage + 1]), num_layers
        return num_layers - 1, num_layers

    def _setup_outputs(self, num_features: Sequence[int], out_indices: Union[None, int, Sequence[int]],
                       frozen_stages: int, norm_eval: bool, in_channels: int) -> None:
        num_stages = len(num_features)
        check_in_channels(type(self).__name__, in_channels)
        if out_indices is None:
            out_indices = default_out_indices(num_stages)
        if isinstance(out_indices, int):
            out_indices = (out_indices,)
        out_indices = tuple(i + num_stages if i < 0 else i for i in out_indices)
        if not out_indices or any(not 0 <= i < num_stages for i in out_indices):
            raise ValueError(f'out_indices must be stage indices in [0, {num_stages}), got {out_indices}')
        self.num_frozen_stages = stages_frozen_by(frozen_stages)
        if frozen_stages < -1 or self.num_frozen_stages > num_stages:
            largest = num_stages - 1 if building_scope() in INCLUSIVE_FROZEN_STAGES_SCOPES else num_stages
            raise ValueError(f'frozen_stages must be in [-1, {largest}], got {frozen_stages}')
        self.num_features = list(num_features)
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.in_channels = in_channels

    def _setup_fsla(self, num_stages: int, fsla_stages: Optional[Sequence[int]], fsla_cfg: Optional[dict],
                    with_fsla: Optional[bool] = None, **legacy) -> None:
        """``self.fsla_stages`` (None: the subclass's ``released_fsla_stages``) and ``self.fsla_cfg`` (the
        subclass's ``default_fsla_cfg`` updated by ``fsla_cfg`` and the deprecated flat arguments)."""
        name = type(self).__name__
        self.fsla_stages = resolve_fsla_stages(name, fsla_stages, num_stages,
                                               default=self.released_fsla_stages(num_stages), with_fsla=with_fsla)
        self.fsla_cfg = resolve_fsla_cfg(name, fsla_cfg, self.default_fsla_cfg, **legacy)
        try:
            check_fsla_settings(**self.fsla_cfg)
        except ValueError as error:  # the module's check, named as the config spells it
            raise ValueError(f'{name}: fsla_cfg {error}') from None

    def _add_output_norms(self, norm_cfg: Optional[dict] = LAYER_NORM_CFG) -> None:
        """``norm{i}`` for every output stage: LayerNorm, or ``norm_cfg`` (None: none, as mmpretrain builds it)."""
        for i in self.out_indices:
            self.add_module(f'norm{i}', build_token_norm(norm_cfg, self.num_features[i]))
        self._freeze_stages()

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'{type(self).__name__} expects images of shape (B, {self.in_channels}, H, W), '
                             f'got {tuple(x.shape)}')
        if x.shape[0] == 0:
            raise ValueError(f'{type(self).__name__} got a batch of 0 images {tuple(x.shape)}: nothing to encode')

    def _output(self, stage_index: int, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        """Stage output through its ``norm{i}``, as an NCHW map."""
        return tokens_to_nchw(getattr(self, f'norm{stage_index}')(x), hw_shape)

    @staticmethod
    def drop_path_schedule(depths: Sequence[int], drop_path_rate: float) -> List[List[float]]:
        """Stochastic depth rising linearly from 0 to ``drop_path_rate`` over all blocks, split per stage."""
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        return [rates[sum(depths[:i]):sum(depths[:i + 1])] for i in range(len(depths))]

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Images (B, C, H, W) -> first-stage tokens (B, N, C) and their (H, W)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(B, C, H, W) images -> the ``out_indices`` stage outputs as NCHW maps. Each stage returns its output
        and the next stage's input (Swin merges after its output, CSWin before its blocks)."""
        self._check_input(x)
        x, hw_shape = self._embed(x)
        outs = []
        for i, stage in enumerate(self.stages):
            out, out_hw, x, hw_shape = stage(x, hw_shape)
            if i in self.out_indices:
                outs.append(self._output(i, out, out_hw))
        return tuple(outs)

    def init_weights(self):
        """Fresh initialisation, then the ``init_cfg`` of every submodule that has one (mmpretrain's
        ``stage_cfgs`` / ``block_cfgs`` / ``patch_cfg`` ``init_cfg``), then the backbone's own ``init_cfg``.
        A Pretrained checkpoint goes through
        ``boat_mm.models.utils.ckpt_convert.pretrained_backbone_weights``: ours loads as is (after
        ``prefix``), an upstream
        layout (official Swin / CSWin, released BOAT, OpenMMLab Swin, e.g. the checkpoints that stock
        mmdet / mmseg Swin configs name) is converted first; what it lacks keeps its fresh initialisation
        and is listed in the log."""
        self._init_fresh_weights()
        for module in self.modules():  # parents before children, as mmengine initialises BaseModules
            if module is not self and getattr(module, 'init_cfg', None):
                initialize(module, module.init_cfg)
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
        weights, layout = pretrained_backbone_weights(path, prefix)
        own = self.state_dict()
        notes = self._adapt_checkpoint(weights, own)
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
        for note in notes:
            print_log(f'{type(self).__name__}: {note}', logger='current', level=logging.INFO)

    def _adapt_checkpoint(self, weights: dict, own: dict) -> List[str]:
        """Fit checkpoint tensors made for another input geometry to this backbone, in place (here: the
        relative position tables of another window); returns the log lines. Backbones with more such tensors
        extend it."""
        note = self._resize_window_tables(weights, own)
        return [note] if note else []

    @staticmethod
    def _resize_window_tables(weights: dict, own: dict) -> Optional[str]:
        """Checkpoint relative position bias tables for another Swin window than this backbone's: resized
        bicubically to this window (``ckpt_convert.resize_relative_position_tables``); returns the log line."""
        mine = [k for k in own if k.endswith(RELATIVE_TABLE_SUFFIX)]
        if not mine or not any(k in weights and weights[k].shape[0] != own[k].shape[0] for k in mine):
            return None
        targets = {}  # this backbone's window -> the checkpoint tables to resize to it (one per block)
        for key in mine:
            if key in weights and weights[key].shape[0] != own[key].shape[0]:
                targets.setdefault(table_window_size(own[key]), []).append(key)
        sources = sorted({table_window_size(weights[k]) for keys in targets.values() for k in keys})
        resized = []
        for target, keys in sorted(targets.items()):
            tables = {k: weights[k] for k in keys}
            resized += resize_relative_position_tables(tables, target)
            weights.update(tables)
        return (f'resized {len(resized)} relative_position_bias_table tensors from window '
                f'{"/".join(map(str, sources))} to window {"/".join(map(str, sorted(targets)))} (bicubic)')

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
        """``frozen_stages >= 0`` freezes the patch embedding and the first ``stages_frozen_by(k)`` stages with
        their output norms (see ``stages_frozen_by`` for the toolboxes' two meanings)."""
        if self.frozen_stages >= 0:
            freeze(self.patch_embed)
        for i in range(self.num_frozen_stages):
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


def build_branch_dropout(cfg: Optional[dict]) -> Optional[nn.Module]:
    """The module an mmcv ``dropout_layer`` config builds (None: none): our ``DropPath`` for ``DropPath``,
    mmcv's ``build_dropout`` for the others."""
    if cfg is None:
        return None
    if cfg.get('type') == 'DropPath':
        return DropPath(cfg.get('drop_prob', 0.0))
    from mmcv.cnn.bricks.drop import build_dropout
    return build_dropout(dict(cfg))


class BilateralBlock(nn.Module, metaclass=ABCMeta):
    """A BOAT block: image-space attention (subclasses: Swin windows, CSWin stripes), then the optional
    feature-space local attention with its own LayerNorm (``norm_fsla``), then the MLP (``norm2``); pre-norm
    residuals, drop path, gradient checkpointing that keeps the forward's clusters.

    The released models differ in one place, ``fsla_under_drop_path``: BOAT-CSWin puts the FSLA residual
    under drop path, BOAT-Swin does not. Modules are registered in the released order (``norm1``, the
    image-space attention, ``norm_fsla``, ``fsla``, ``drop_path``, ``norm2``, ``mlp``), which fresh
    initialisation follows.

    Args (keyword-only):
        embed_dims, num_heads: channels and heads of the block (FSLA uses the same heads).
        use_fsla: build FSLA in this block.
        fsla_cfg: FeatureSpaceLocalAttention settings (cluster_size, overlap, kmeans_iters, temperature,
            qk_scale).
        qkv_bias: bias of the qkv projections (image-space attention and FSLA).
        attn_drop: attention dropout (both attentions); fsla_proj_drop: dropout after the FSLA projection.
        mlp_ratio, drop: MLP width and dropout (also after the image-space attention's projection).
        mlp_hidden_dims: the MLP width in channels (mmpretrain's ``ffn_cfgs`` ``feedforward_channels``), instead
            of ``mlp_ratio``; ffn_drop: the MLP's dropout where it differs from ``drop`` (None: ``drop``).
        norm_cfg: the block's norms (``norm1``, ``norm_fsla``, ``norm2``; None: LayerNorm); act_cfg: the MLP
            activation (None: GELU).
        attention_dropout_layer, mlp_dropout_layer: mmcv dropout configs (``DropPath`` / ``Dropout`` with a
            ``drop_prob``) ending the image-attention / MLP branch instead of ``drop_path`` (mmpretrain's
            ``attn_cfgs`` / ``ffn_cfgs`` ``dropout_layer``); mlp_residual: False drops the MLP's residual, the block
            returning the MLP branch alone (mmcv ``FFN``'s ``add_identity=False``); mlp_num_fcs,
            mlp_layer_scale: the MLP's Linear count and layer-scale start (``Mlp``'s ``num_fcs``,
            ``layer_scale_init_value``).
        drop_path: stochastic depth of this block; with_cp: gradient checkpointing.
        image_attention_cfg: the subclass's own settings, passed to ``_build_image_attention``.
    """
    fsla_under_drop_path = False

    def __init__(self, *, embed_dims: int, num_heads: int, use_fsla: bool, fsla_cfg: Optional[dict] = None,
                 qkv_bias: bool = True, attn_drop: float = 0.0, fsla_proj_drop: float = 0.0,
                 mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0, with_cp: bool = False,
                 image_attention_cfg: Optional[dict] = None, mlp_hidden_dims: Optional[int] = None,
                 ffn_drop: Optional[float] = None, norm_cfg: Optional[dict] = None, act_cfg: Optional[dict] = None,
                 attention_dropout_layer: Optional[dict] = None, mlp_dropout_layer: Optional[dict] = None,
                 mlp_residual: bool = True, mlp_num_fcs: int = 2, mlp_layer_scale: float = 0.0):
        super().__init__()
        self.with_cp = with_cp
        norm_cfg = LAYER_NORM_CFG if norm_cfg is None else norm_cfg
        self.norm1 = build_token_norm(norm_cfg, embed_dims)
        self._build_image_attention(embed_dims=embed_dims, num_heads=num_heads, qkv_bias=qkv_bias,
                                    attn_drop=attn_drop, drop=drop, **(image_attention_cfg or {}))
        if use_fsla:
            self.norm_fsla = build_token_norm(norm_cfg, embed_dims)
            self.fsla = FeatureSpaceLocalAttention(embed_dims, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                                   proj_drop=fsla_proj_drop, **(fsla_cfg or {}))
        else:
            self.fsla = None
        self.drop_path = DropPath(drop_path)
        # mmpretrain's attn_cfgs / ffn_cfgs ``dropout_layer``: another stochastic depth (or dropout) for one branch
        self.attention_dropout = build_branch_dropout(attention_dropout_layer)
        self.mlp_dropout = build_branch_dropout(mlp_dropout_layer)
        self.mlp_residual = mlp_residual
        self.norm2 = build_token_norm(norm_cfg, embed_dims)
        hidden_dims = int(embed_dims * mlp_ratio) if mlp_hidden_dims is None else mlp_hidden_dims
        self.mlp = Mlp(embed_dims, hidden_dims, drop if ffn_drop is None else ffn_drop, act_cfg, mlp_num_fcs,
                       mlp_layer_scale)

    @abstractmethod
    def _build_image_attention(self, *, embed_dims: int, num_heads: int, qkv_bias: bool, attn_drop: float,
                               drop: float, **settings) -> None:
        """Build the image-space attention's modules (called between ``norm1`` and FSLA)."""

    @abstractmethod
    def image_attention(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        """(B, N, C) normalised tokens of an (H, W) map -> (B, N, C), before the residual."""

    def _forward(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        x = x + (self.attention_dropout or self.drop_path)(self.image_attention(self.norm1(x), hw_shape))
        if self.fsla is not None:
            fsla = self.fsla(self.norm_fsla(x), hw_shape)
            x = x + (self.drop_path(fsla) if self.fsla_under_drop_path else fsla)
        mlp = (self.mlp_dropout or self.drop_path)(self.mlp(self.norm2(x)))
        return x + mlp if self.mlp_residual else mlp

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        if not (self.with_cp and x.requires_grad):
            return self._forward(x, hw_shape)
        if self.fsla is None:
            return cp.checkpoint(self._forward, x, hw_shape, use_reentrant=False)
        clusters: list = []  # filled by the forward, replayed by the backward's recomputation

        def forward_keeping_clusters(x: torch.Tensor) -> torch.Tensor:
            with self.fsla.replaying(clusters):
                return self._forward(x, hw_shape)
        return cp.checkpoint(forward_keeping_clusters, x, use_reentrant=False)
