"""BOAT-Swin: Swin Transformer with feature-space local attention (BOAT, arXiv 2201.13027).

Every block is Swin's (shifted) window attention + MLP; the shifted (odd-index) blocks of the stages
listed in ``fsla_stages`` (released: stages 0-2, those larger than a window at 224) also run
feature-space local attention, on its own LayerNorm and *outside* drop path, as released:

    x = x + drop_path(SW-MSA(norm1(x)))
    x = x + FSLA(norm_fsla(x))
    x = x + drop_path(MLP(norm2(x)))

Any input size works: the patch embedding and patch merging pad odd sizes, windows are padded to
window multiples (as the toolboxes' Swin pad them, real tokens attending to the zero tokens, unless
``mask_padding``), and a map no larger than one window is not shifted outside mmdet / mmseg (as in the
released models, whose last stage at 224 is exactly one window, and mmpretrain's ``pad_small_map=False``).

Parameter names follow the released checkpoints up to a short rename table (see ``boat_mm.models.utils.ckpt_convert``).
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_

from ...registry import register_model
from ...utils.torch_features import constant_under_compile
from ..layers.feature_space_attention import (
    DEFAULT_CLUSTER_SIZE,
    DEFAULT_KMEANS_ITERS,
    DEFAULT_OVERLAP,
    DEFAULT_TEMPERATURE,
)
from ..layers.transformer_layers import (
    GELU_CFG,
    LAYER_NORM_CFG,
    PADDING_MODES,
    adaptive_pad,
    build_token_norm,
    cache_outside_tracing,
    pad_to_multiple,
    resize_position_embedding,
    to_pair,
    tokens_to_nchw,
)
from ..utils.toolbox_args import (
    DOWNSAMPLE_CFG_KEYS,
    PATCH_CFG_KEYS,
    PATCH_CFG_RENAMES,
    PATCH_CFG_SETTINGS,
    PATCH_CONV_TYPES,
    UNSET,
    building_scope,
    builds_like_mmpretrain,
    check_act_cfg,
    check_image_size,
    check_keys,
    check_norm_cfg,
    check_overrides,
    check_rate,
    check_window_size,
    image_size_pair,
    init_cfg_from_pretrained,
    refuse_unless,
    resolve_arch,
    resolve_swin_stages,
)
from .base_backbone import LINEAR_INIT_STD, BilateralBlock, BOATBackbone

__all__ = ['BOATSwinTransformer', 'BOATSwinStage', 'BOATSwinBlock', 'WindowMSA', 'CosineWindowMSA', 'PatchEmbed',
           'PatchMerging', 'PatchSampler', 'window_partition', 'window_reverse', 'WindowAttentionOutput',
           'relative_position_index', 'POSITION_EMBEDDING_KEY']

# Logit added between tokens of different shifted-window regions, as in Swin and the released BOAT.
SHIFT_MASK_VALUE = -100.0
DEFAULT_WINDOW_SIZE = 7
PATCH_SIZE = 4
PATCH_MERGING_STRIDE = 2
# Bound of the shifted-window mask cache (all devices together; a mask is ~12 MiB at stage 1 of 800x1216).
WINDOW_MASK_CACHE_BYTES = 64 << 20
WINDOW_MASK_CACHE_ENTRIES = 128
# Swin-V2's window attention (mmpretrain's WindowMSAV2, ``attn_cfgs=dict(window_msa=...)``): the hidden width of
# its continuous position bias MLP, the start and cap of its learned logit scale, the range its log-spaced
# relative coordinates are normalised to, and the bound of its sigmoid bias.
CPB_MLP_HIDDEN_DIMS = 512
LOGIT_SCALE_INIT = 10.0
LOGIT_SCALE_MAX = 100.0
CPB_COORDINATE_RANGE = 8.0
CPB_BIAS_BOUND = 16.0
# The stock Swins' absolute position embedding (use_abs_pos_embed=True): its key, resized on load like the tables.
POSITION_EMBEDDING_KEY = 'absolute_pos_embed'
# The stock Swins' pretraining size, which sizes the absolute position embedding unless given.
DEFAULT_PRETRAIN_IMG_SIZE = 224
# F.interpolate's modes for a 2-D map, which mmpretrain's ``interpolate_mode`` may name.
INTERPOLATE_MODES = ('nearest', 'bilinear', 'bicubic', 'area', 'nearest-exact')


@constant_under_compile  # compiled graphs hold the mask, not the ops that build it on the CPU
@cache_outside_tracing(maxsize=WINDOW_MASK_CACHE_ENTRIES, max_bytes=WINDOW_MASK_CACHE_BYTES)
def _window_mask(height: int, width: int, window: int, shift: int, device: torch.device,
                 mask_padding: bool = False) -> Optional[torch.Tensor]:
    """Additive (num_windows, window**2, window**2) mask for a (height, width) map padded to window
    multiples and cyclically shifted by ``shift``; None when nothing is masked.

    Tokens of different shift regions see each other through SHIFT_MASK_VALUE (as released and as the
    toolboxes' Swin), the padded positions belonging to the region they lie in, as there. With
    ``mask_padding`` the padded tokens are their own region instead and never seen by a real token (-inf)."""
    padded_h, padded_w = -(-height // window) * window, -(-width // window) * window
    padded = (padded_h, padded_w) != (height, width)
    if shift == 0 and not (mask_padding and padded):
        return None
    region = torch.zeros(padded_h, padded_w, dtype=torch.long)
    if shift > 0:
        slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
        for i, hs in enumerate(slices):
            for j, ws in enumerate(slices):
                region[hs, ws] = i * 3 + j
    is_pad = torch.zeros(padded_h, padded_w, dtype=torch.bool)
    if mask_padding:
        is_pad[height:] = True
        is_pad[:, width:] = True
        is_pad = torch.roll(is_pad, shifts=(-shift, -shift), dims=(0, 1))
    region = region.masked_fill(is_pad, -1)

    def windows(t):
        t = t.view(padded_h // window, window, padded_w // window, window).transpose(1, 2)
        return t.reshape(-1, window * window)

    region_w, pad_w = windows(region), windows(is_pad)
    mask = torch.zeros(region_w.shape[0], window * window, window * window)
    mask.masked_fill_(region_w.unsqueeze(2) != region_w.unsqueeze(1), SHIFT_MASK_VALUE)
    mask.masked_fill_(~pad_w.unsqueeze(2) & pad_w.unsqueeze(1), float('-inf'))
    return mask.to(device)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of ``window`` -> (B * num_windows, window**2, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of ``window_partition``: -> (B, height, width, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, height, width, c)


def relative_position_index(window_size: int) -> torch.Tensor:
    """(window**2, window**2) index of every (query, key) pair's relative offset in a (2w-1)**2 table, as
    Swin (and Swin-V2) index their relative position bias."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size),
                                        indexing='ij')).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
    return relative[..., 0] * (2 * window_size - 1) + relative[..., 1]


class WindowAttentionOutput:
    """What Swin's and Swin-V2's window attentions share after their logits: the shifted-window mask, the
    softmax, the values and the projection (a mixin of ``num_heads``, ``attn_drop``, ``proj``, ``proj_drop``)."""

    def _attend(self, attn: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """attn: (B * num_windows, heads, n, n) logits; v: (B * num_windows, heads, n, d); mask as ``forward``'s."""
        bw, _, n, _ = attn.shape
        if mask is not None:
            num_windows = mask.shape[0]
            attn = attn.view(bw // num_windows, num_windows, self.num_heads, n, n)
            attn = (attn + mask.to(attn.dtype).unsqueeze(1).unsqueeze(0)).view(bw, self.num_heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(bw, n, -1)
        return self.proj_drop(self.proj(x))


class WindowMSA(WindowAttentionOutput, nn.Module):
    """Window multi-head self-attention with a learned relative position bias (Swin)."""

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, qk_scale: Optional[float] = None):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = qk_scale or (embed_dims // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # Rebuilt from window_size, so not saved (the converter drops the released copy).
        self.register_buffer('relative_position_index', relative_position_index(window_size), persistent=False)
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B * num_windows, window**2, C); mask: (num_windows, window**2, window**2) or None."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return self._attend(attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0), v, mask)


class CosineWindowMSA(WindowAttentionOutput, nn.Module):
    """Swin-V2's window attention, as mmpretrain's ``WindowMSAV2`` (its parameter names): cosine similarity of
    queries and keys times a learned per-head ``logit_scale`` (capped at ``LOGIT_SCALE_MAX``), plus a
    continuous relative position bias: a small MLP (``cpb_mlp``) of log-spaced relative coordinates, bounded
    by ``CPB_BIAS_BOUND * sigmoid``; qkv without bias but for ``q_bias`` and ``v_bias``. The coordinates are
    normalised by ``pretrained_window_size - 1`` when given, else by the window's."""

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, cpb_mlp_hidden_dims: int = CPB_MLP_HIDDEN_DIMS,
                 pretrained_window_size=(0, 0)):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.cpb_mlp = nn.Sequential(nn.Linear(2, cpb_mlp_hidden_dims), nn.ReLU(inplace=True),
                                     nn.Linear(cpb_mlp_hidden_dims, num_heads, bias=False))
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), LOGIT_SCALE_INIT).log())
        offsets = torch.arange(-(window_size - 1), window_size, dtype=torch.float32)
        table = torch.stack(torch.meshgrid(offsets, offsets, indexing='ij'), dim=-1)  # (2w-1, 2w-1, 2)
        pretrained = to_pair(pretrained_window_size)
        norms = [p - 1 if p > 0 else window_size - 1 for p in pretrained]
        table = table / torch.tensor([max(n, 1) for n in norms], dtype=torch.float32) * CPB_COORDINATE_RANGE
        table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(CPB_COORDINATE_RANGE)
        # Rebuilt from the window, so not saved (the converter drops the stock copies).
        self.register_buffer('relative_coords_table', table.view(-1, 2), persistent=False)
        self.register_buffer('relative_position_index', relative_position_index(window_size), persistent=False)
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(embed_dims)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(embed_dims)) if qkv_bias else None
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B * num_windows, window**2, C); mask: (num_windows, window**2, window**2) or None."""
        bw, n, c = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).view(bw, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * self.logit_scale.clamp(max=math.log(LOGIT_SCALE_MAX)).exp()
        table = self.cpb_mlp(self.relative_coords_table)
        position_bias = table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        return self._attend(attn + CPB_BIAS_BOUND * torch.sigmoid(position_bias).unsqueeze(0), v, mask)


class BOATSwinBlock(BilateralBlock):
    """One BOAT-Swin block: (shifted) window attention, optional FSLA (not under drop path, as released),
    MLP; pre-norm residuals. Arguments of ``BilateralBlock`` (FSLA's output dropout is ``drop``), and:

    - ``shift``: shifted windows (by half a window, or ``shift_size``); ``pad_small_map``: shift a map no
      larger than one window too (mmdet's / mmseg's Swin always do, mmpretrain's with ``pad_small_map=True``);
      otherwise such a map is not shifted, as in the released models, whose last stage at 224 is one window;
    - ``mask_padding``: padded tokens (a map not a multiple of the window is zero-padded at the bottom / right)
      are masked as keys; otherwise real tokens attend to them, as in the toolboxes' Swin;
    - ``proj_drop``: dropout after the window attention's projection (None: ``drop``);
    - ``init_cfg``, ``attention_init_cfg``, ``mlp_init_cfg``: mmengine init configs of the block, its window
      attention and its MLP (mmpretrain's ``block_cfgs`` / ``attn_cfgs`` / ``ffn_cfgs`` ``init_cfg``);
    - ``window_msa``: 'WindowMSA' (Swin's) or 'WindowMSAV2' (Swin-V2's ``CosineWindowMSA``, with
      ``cosine_attention_cfg``: ``cpb_mlp_hidden_dims``, ``pretrained_window_size``).
    """
    fsla_under_drop_path = False

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, use_fsla: bool, shift: bool = False,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, fsla_cfg: Optional[dict] = None, with_cp: bool = False,
                 qk_scale: Optional[float] = None, pad_small_map: bool = False, mask_padding: bool = False,
                 proj_drop: Optional[float] = None, shift_size: Optional[int] = None, init_cfg: Optional[dict] = None,
                 attention_init_cfg: Optional[dict] = None, mlp_init_cfg: Optional[dict] = None,
                 window_msa: str = 'WindowMSA', cosine_attention_cfg: Optional[dict] = None, **block_options):
        super().__init__(embed_dims=embed_dims, num_heads=num_heads, use_fsla=use_fsla, fsla_cfg=fsla_cfg,
                         qkv_bias=qkv_bias, attn_drop=attn_drop, fsla_proj_drop=drop, mlp_ratio=mlp_ratio,
                         drop=drop, drop_path=drop_path, with_cp=with_cp,
                         image_attention_cfg=dict(window_size=window_size, qk_scale=qk_scale,
                                                  shift_size=(window_size // 2 if shift else 0)
                                                  if shift_size is None else shift_size,
                                                  pad_small_map=pad_small_map, mask_padding=mask_padding,
                                                  proj_drop=proj_drop, window_msa=window_msa,
                                                  cosine_attention_cfg=cosine_attention_cfg or {}),
                         **block_options)
        # mmpretrain's block_cfgs / attn_cfgs / ffn_cfgs init_cfg, applied by BOATBackbone.init_weights
        self.init_cfg, self.attn.init_cfg, self.mlp.init_cfg = init_cfg, attention_init_cfg, mlp_init_cfg

    def _build_image_attention(self, *, embed_dims: int, num_heads: int, qkv_bias: bool, attn_drop: float,
                               drop: float, window_size: int, shift_size: int, qk_scale: Optional[float],
                               pad_small_map: bool, mask_padding: bool, proj_drop: Optional[float],
                               window_msa: str, cosine_attention_cfg: dict) -> None:
        self.window_size = window_size
        self.shift_size = shift_size
        self.pad_small_map = pad_small_map
        self.mask_padding = mask_padding
        proj_drop = drop if proj_drop is None else proj_drop
        if window_msa == 'WindowMSAV2':
            self.attn = CosineWindowMSA(embed_dims, num_heads, window_size, qkv_bias, attn_drop, proj_drop,
                                        **cosine_attention_cfg)
        else:
            self.attn = WindowMSA(embed_dims, num_heads, window_size, qkv_bias, attn_drop, proj_drop, qk_scale)

    def image_attention(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        height, width = hw_shape
        b, _, c = x.shape
        window = self.window_size
        shift = self.shift_size if self.pad_small_map or min(height, width) > window else 0
        x = x.view(b, height, width, c)
        x, pad_h, pad_w = pad_to_multiple(x, window, window)
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        mask = _window_mask(height, width, window, shift, x.device, self.mask_padding)
        out = self.attn(window_partition(x, window), mask)
        out = window_reverse(out, window, height + pad_h, width + pad_w)
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        return out[:, :height, :width].reshape(b, height * width, c)


def _check_sampler(class_name: str, name: str, kernel_size, stride, padding, dilation) -> None:
    """The settings of a patch sampler (patch embedding, patch merging) as mmcv takes them: positive ints or
    pairs, and a padding that is one of ``PADDING_MODES`` or non-negative ints."""
    for key, value, least in (('kernel_size', kernel_size, 1), ('stride', stride, 1), ('dilation', dilation, 1)):
        pair = to_pair(value)
        refuse_unless(len(pair) == 2 and all(isinstance(v, int) and v >= least for v in pair), class_name,
                      f'{name} {key}', value, f'an int >= {least} or a pair of them')
    if isinstance(padding, str):
        refuse_unless(padding in PADDING_MODES, class_name, f'{name} padding', padding,
                      f'one of {PADDING_MODES} or ints >= 0')
    else:
        pair = to_pair(padding)
        refuse_unless(len(pair) == 2 and all(isinstance(v, int) and v >= 0 for v in pair), class_name,
                      f'{name} padding', padding, f'one of {PADDING_MODES} or ints >= 0')


class PatchSampler(nn.Module):
    """What the patch embedding and the patch merging share, as mmcv builds them: a (kernel, stride, dilation)
    sampler over the map, after adaptive padding (``padding`` 'corner' or 'same') or with a fixed one (ints)."""

    def _setup_sampler(self, kernel_size, stride, padding, dilation) -> None:
        self.kernel_size = to_pair(kernel_size)
        self.stride = to_pair(stride or kernel_size)
        self.dilation = to_pair(dilation)
        self.padding_mode = padding if isinstance(padding, str) else None
        self.fixed_padding = (0, 0) if self.padding_mode else to_pair(padding)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the map the sampler reads (adaptive padding)."""
        if self.padding_mode is None:
            return x
        return adaptive_pad(x, self.kernel_size, self.stride, self.dilation, self.padding_mode)

    def out_size(self, hw_shape: Sequence[int]) -> Tuple[int, int]:
        """The (H, W) this sampler gives for an (H, W) input."""
        sizes = []
        for size, k, s, d, p in zip(hw_shape, self.kernel_size, self.stride, self.dilation, self.fixed_padding):
            if self.padding_mode is not None:
                size += max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            sizes.append((size + 2 * p - d * (k - 1) - 1) // s + 1)
        return tuple(sizes)


class PatchMerging(PatchSampler):
    """Swin patch merging: the 2x2 neighbours concatenated (released order), a norm (LayerNorm; none with
    mmdet's / mmseg's ``patch_norm=False``), Linear 4C -> 2C.

    Odd maps are zero-padded at the bottom/right first. Other samplers, as the toolboxes' ``PatchMerging``
    takes them (mmdet's / mmseg's ``strides``, mmpretrain's ``downsample_cfg``): ``kernel_size`` x
    ``kernel_size`` neighbours every ``stride`` (default: the kernel), ``padding`` and ``dilation`` as mmcv's,
    concatenated in the same position-major order (column by column), then ``norm_cfg`` and a Linear to
    ``out_dims`` (default 2C, with ``bias``)."""

    def __init__(self, embed_dims: int, out_dims: Optional[int] = None, kernel_size=PATCH_MERGING_STRIDE,
                 stride=None, padding='corner', dilation=1, bias: bool = False,
                 norm_cfg: Optional[dict] = LAYER_NORM_CFG, init_cfg: Optional[dict] = None):
        super().__init__()
        self.init_cfg = init_cfg
        self._setup_sampler(kernel_size, stride, padding, dilation)
        self.released_sampler = (self.kernel_size == self.stride == (PATCH_MERGING_STRIDE,) * 2
                                 and self.dilation == (1, 1) and self.padding_mode == 'corner')
        sample_dims = self.kernel_size[0] * self.kernel_size[1] * embed_dims
        self.norm = build_token_norm(norm_cfg, sample_dims)
        self.reduction = nn.Linear(sample_dims, out_dims or 2 * embed_dims, bias=bias)

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> Tuple[torch.Tensor, Tuple[int, int]]:
        b, _, c = x.shape
        if self.released_sampler:
            x, _, _ = pad_to_multiple(x.view(b, *hw_shape, c), 2, 2)
            x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
            out_hw = tuple(x.shape[1:3])
            x = x.reshape(b, -1, 4 * c)
        else:
            x = self._pad(tokens_to_nchw(x, hw_shape))
            out_hw = self.out_size(hw_shape)
            columns = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=self.fixed_padding,
                               stride=self.stride)  # (B, C * kh * kw, L), channel-major
            kh, kw = self.kernel_size
            x = columns.view(b, c, kh, kw, -1).permute(0, 4, 3, 2, 1).reshape(b, -1, kw * kh * c)
        return self.reduction(self.norm(x)), out_hw


class PatchEmbed(PatchSampler):
    """Non-overlapping patch embedding (conv patch x patch) + LayerNorm (none with ``patch_norm`` False, as
    the stock Swins take it); pads odd image sizes at the bottom / right. Other settings as mmcv's
    ``PatchEmbed`` takes them (mmpretrain's ``patch_cfg``): ``kernel_size``, ``stride`` (default: the kernel),
    ``padding``, ``dilation``, ``bias``, ``norm_cfg``."""

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int = PATCH_SIZE, patch_norm: bool = True,
                 stride=None, padding='corner', dilation=1, bias: bool = True,
                 norm_cfg: Optional[dict] = LAYER_NORM_CFG, init_cfg: Optional[dict] = None):
        super().__init__()
        self.init_cfg = init_cfg
        self._setup_sampler(patch_size, stride, padding, dilation)
        self.proj = nn.Conv2d(in_channels, embed_dims, kernel_size=self.kernel_size, stride=self.stride,
                              padding=self.fixed_padding, dilation=self.dilation, bias=bias)
        self.norm = build_token_norm(norm_cfg if patch_norm else None, embed_dims)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        x = self.proj(self._pad(x))
        hw_shape = tuple(x.shape[2:])
        return self.norm(x.flatten(2).transpose(1, 2)), hw_shape


class BOATSwinStage(nn.Module):
    """Blocks of one resolution, then (except for the last stage) patch merging.

    ``blocks``: one dict of ``BOATSwinBlock`` arguments per block (heads, window, shift, drop path, ...); FSLA, with
    ``use_fsla``, in the odd-index blocks (the shifted ones unless ``stage_cfgs`` says otherwise), as released;
    ``downsample``: ``PatchMerging``'s arguments, or None for the last stage."""

    def __init__(self, embed_dims: int, blocks: Sequence[dict], use_fsla: bool, downsample: Optional[dict],
                 output_after_downsample: bool = False, init_cfg: Optional[dict] = None, **shared_block_kwargs):
        super().__init__()
        self.init_cfg = init_cfg
        self.output_after_downsample = output_after_downsample
        self.blocks = nn.ModuleList([
            BOATSwinBlock(embed_dims, use_fsla=use_fsla and i % 2 == 1, **block, **shared_block_kwargs)
            for i, block in enumerate(blocks)])
        self.downsample = None if downsample is None else PatchMerging(embed_dims, **downsample)

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int]):
        """-> (stage output, its (H, W), next stage's input, its (H, W)): the output is taken before the
        patch merging, as mmdet's ``SwinBlockSequence`` does, or after it (``output_after_downsample``:
        mmpretrain's ``out_after_downsample=True``)."""
        for block in self.blocks:
            x = block(x, hw_shape)
        if self.downsample is None:
            return x, hw_shape, x, hw_shape
        merged, merged_hw = self.downsample(x, hw_shape)
        if self.output_after_downsample:
            return merged, merged_hw, merged, merged_hw
        return x, hw_shape, merged, merged_hw


@register_model
class BOATSwinTransformer(BOATBackbone):
    """BOAT-Swin backbone for mmpretrain, mmdet and mmseg, and a drop-in for their ``SwinTransformer``.

    Args:
        arch: 'tiny'/'small'/'base'/'large' (or 't'/'s'/'b'/'l'), or a dict with keys ``embed_dims``,
            ``depths``, ``num_heads``. Alternatively give ``embed_dims``/``depths``/``num_heads`` directly
            (the mmdet/mmseg way; missing ones default to the tiny model). Both ways at once must agree.
        in_channels: image channels.
        patch_size: side of the non-overlapping patch embedding (released: 4).
        window_size: Swin window (released: 7).
        mlp_ratio: MLP hidden / embed dims.
        qkv_bias: bias in all qkv projections.
        qk_scale: window-attention scale (None: head_dim ** -0.5); FSLA keeps ``fsla_cfg['qk_scale']``.
        drop_rate, attn_drop_rate, drop_path_rate: dropout, attention dropout, stochastic depth (linear
            over blocks; FSLA is not under drop path, as released). ``drop_rate`` is mmdet's / mmseg's, after
            the embedding and in every block; under mmpretrain it is its Swin's, after the embedding only (block
            dropouts via ``stage_cfgs``), FSLA's output dropout being ``drop_rate`` in both.
        fsla_stages: stages whose shifted blocks carry FSLA; None: every stage but the last (released:
            0, 1, 2); ``()`` builds plain Swin.
        fsla_cfg: FSLA settings, a dict with any of ``cluster_size``, ``overlap``, ``kmeans_iters``,
            ``temperature``, ``qk_scale``; missing keys take the released values (``default_fsla_cfg``;
            ``qk_scale=None`` means head_dim ** -0.5, as BOAT-Swin was trained). The flat arguments
            ``cluster_size=``, ``overlap=``, ``kmeans_iters=``, ``temperature=``, ``fsla_qk_scale=`` are
            deprecated aliases (one warning each).
        out_indices: stages whose outputs are returned (each through its own ``norm{i}``); None: the
            building toolbox's default, the last stage under mmpretrain, every stage otherwise.
        frozen_stages: freeze the patch embedding and the first stages (-1: none): ``k`` freezes stages 0..k-1
            when mmdet / mmseg (or plain Python) builds the backbone, 0..k when mmpretrain does, as each
            toolbox's own Swin (``base_backbone.stages_frozen_by``).
        norm_eval: keep normalisation layers in eval mode while training.
        with_cp: gradient checkpointing per block.
        init_cfg: mmengine init config (e.g. ``dict(type='Pretrained', checkpoint=..., prefix='backbone.')``).
        convert_weights: mmdet's flag for an ``init_cfg`` checkpoint in the official Swin layout. Honoured
            for every upstream layout, whether set or not: the layout is read off the keys (official Swin,
            released BOAT, mmdet/mmseg/mmpretrain Swin) and converted on load; parameters the checkpoint
            lacks (FSLA, extra output norms) keep their fresh initialisation and are listed in the log.
        pretrained: deprecated alias of ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``.
        strides: mmdet's / mmseg's: the patch embedding's stride (must equal ``patch_size``, as they assert),
            then each patch merging's (a 2x2 kernel; default 2).
        patch_norm: mmdet's / mmseg's: False leaves the norm out of the patch embedding and the mergings.
        act_cfg: the MLP activation (mmcv config; default exact GELU).
        norm_cfg: mmdet's / mmseg's: every norm (patch embedding, mergings, blocks, outputs); under mmpretrain
            its Swin's: the output norms only, None meaning none. Default LayerNorm.
        use_abs_pos_embed: a learned (1, h * w, C) position embedding added after the patch embedding, over the
            patch grid of ``img_size`` (mmpretrain: the patch embedding's output for it, or ``patch_cfg``'s
            ``input_size``) or ``pretrain_img_size`` (mmdet / mmseg: ``size // patch_size``), default 224;
            resized with ``interpolate_mode`` for other inputs and on load from a checkpoint over another
            (square) grid; frozen with the patch embedding under mmdet / mmseg, not under mmpretrain.
        out_after_downsample: mmpretrain's: every stage but the last outputs its merged map (twice the
            channels, its output norm sized to them).
        stage_cfgs: mmpretrain's per-stage settings, one dict for every stage or one per stage:
            ``window_size``, ``num_heads``, ``drop_paths``, ``with_cp``, ``pad_small_map``, ``downsample``
            (a merging after the stage; default: all but the last), ``init_cfg``, ``downsample_cfg`` (the
            merging's ``kernel_size``, ``stride``, ``padding``, ``dilation``, ``bias``, ``norm_cfg``,
            ``init_cfg``, ``out_channels``: the next stage's width) and ``block_cfgs`` (one dict for every block
            or one per block: ``window_size``, ``shift``, ``num_heads``, ``ffn_ratio``, ``drop_path``,
            ``norm_cfg``, ``with_cp``, ``pad_small_map``, ``init_cfg``, ``attn_cfgs`` with ``qkv_bias``,
            ``qk_scale``, ``attn_drop``, ``proj_drop``, ``window_size``, ``shift_size``, ``pad_small_map``,
            ``dropout_layer``, ``init_cfg``, ``window_msa`` ('WindowMSA' or Swin-V2's 'WindowMSAV2', or the
            class: ``CosineWindowMSA``, with ``cpb_mlp_hidden_dims`` and ``pretrained_window_size``), and
            ``ffn_cfgs`` with ``feedforward_channels``, ``num_fcs``, ``act_cfg``, ``ffn_drop``,
            ``dropout_layer``, ``add_identity``, ``layer_scale_init_value``, ``init_cfg``); later settings win,
            as there (``toolbox_args.resolve_swin_stages``).
        patch_cfg: mmpretrain's patch embedding overrides: ``kernel_size``, ``stride``, ``padding`` ('corner',
            'same' or ints), ``dilation``, ``bias``, ``norm_cfg``, ``init_cfg``, ``input_size``.
        pad_small_map: shift maps no larger than one window too (mmpretrain's True); None: the building
            toolbox's way, True under mmdet / mmseg (their Swin always shifts), False under mmpretrain and
            outside any toolbox (a one-window map is not shifted, as released). mmpretrain's False refuses a map
            smaller than the window at the forward; BOAT pads it without shifting.
        mask_padding: BOAT's own: mask the tokens padded to window multiples as keys. Default False, the
            toolboxes' way (real tokens attend to the zero tokens).

    Where a stock class refuses a value (an image size of length 3, ``strides[0]`` other than ``patch_size``,
    an unknown padding mode), BOAT refuses it with a ``ValueError`` naming the argument; so it does bad values
    the stock classes let through (non-finite or non-positive FSLA settings, ``in_channels`` < 1, rates outside
    [0, 1), non-positive windows, strides or kernels) and, at the first forward, a batch of zero images.
    Widths or depths in ``stage_cfgs`` that contradict the architecture (the stock class fails on them) and
    keys the stock stage / block / merging classes do not take are refused, naming them.
    """
    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'], dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))),
        **dict.fromkeys(['s', 'small'], dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))),
        **dict.fromkeys(['b', 'base'], dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))),
        **dict.fromkeys(['l', 'large'], dict(embed_dims=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))),
    }
    essential_keys = ('embed_dims', 'depths', 'num_heads')
    default_fsla_cfg = dict(cluster_size=DEFAULT_CLUSTER_SIZE, overlap=DEFAULT_OVERLAP,
                            kmeans_iters=DEFAULT_KMEANS_ITERS, temperature=DEFAULT_TEMPERATURE, qk_scale=None)

    def __init__(self, arch=None, in_channels: int = 3, patch_size: int = PATCH_SIZE,
                 window_size: int = DEFAULT_WINDOW_SIZE, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1, fsla_stages: Optional[Sequence[int]] = None,
                 fsla_cfg: Optional[dict] = None, out_indices: Optional[Sequence[int]] = None,
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False, init_cfg=None,
                 # the architecture the mmdet/mmseg way
                 embed_dims: Optional[int] = None, depths: Optional[Sequence[int]] = None,
                 num_heads: Optional[Sequence[int]] = None,
                 # the other stock arguments, each with its toolbox's meaning (class docstring)
                 strides: Optional[Sequence[int]] = None, patch_norm: bool = True,
                 use_abs_pos_embed: bool = False, act_cfg: Optional[dict] = GELU_CFG, norm_cfg=UNSET,
                 out_after_downsample: bool = False, stage_cfgs: Optional[dict] = None,
                 patch_cfg: Optional[dict] = None, convert_weights: bool = False, pretrained: Optional[str] = None,
                 pretrain_img_size=None, img_size=None, interpolate_mode: str = 'bicubic',
                 pad_small_map: Optional[bool] = None, mask_padding: bool = False,
                 # deprecated spellings of fsla_cfg's keys
                 cluster_size=UNSET, overlap=UNSET, kmeans_iters=UNSET, temperature=UNSET, fsla_qk_scale=UNSET):
        name = type(self).__name__
        super().__init__(init_cfg=init_cfg_from_pretrained(name, pretrained, init_cfg))
        settings = resolve_arch(name, arch, dict(embed_dims=embed_dims, depths=depths, num_heads=num_heads),
                                self.arch_zoo, self.essential_keys)
        depths, num_heads = tuple(settings['depths']), tuple(settings['num_heads'])
        if len(depths) != len(num_heads):
            raise ValueError(f'depths {depths} and num_heads {num_heads} must have the same length')
        num_stages = len(depths)
        like_mmpretrain = builds_like_mmpretrain()
        check_image_size(name, 'pretrain_img_size', pretrain_img_size)
        check_image_size(name, 'img_size', img_size)
        check_rate(name, 'drop_rate', drop_rate)
        check_rate(name, 'attn_drop_rate', attn_drop_rate)
        check_rate(name, 'drop_path_rate', drop_path_rate)
        refuse_unless(interpolate_mode in INTERPOLATE_MODES, name, 'interpolate_mode', interpolate_mode,
                      f'one of {INTERPOLATE_MODES}')
        self._setup_fsla(num_stages, fsla_stages, fsla_cfg, cluster_size=cluster_size, overlap=overlap,
                         kmeans_iters=kmeans_iters, temperature=temperature, fsla_qk_scale=fsla_qk_scale)
        check_window_size(name, window_size)
        embed_dims = settings['embed_dims']
        # norm_cfg: every norm under mmdet / mmseg; only the output norms under mmpretrain (None: none there)
        output_norm_cfg = LAYER_NORM_CFG if norm_cfg is UNSET else norm_cfg
        check_norm_cfg(name, output_norm_cfg)
        check_act_cfg(name, act_cfg)
        inner_norm_cfg = LAYER_NORM_CFG if like_mmpretrain else output_norm_cfg
        # mmpretrain's drop_rate is the dropout after the embedding only; mmdet's / mmseg's also in the blocks
        block_drop = 0.0 if like_mmpretrain else drop_rate
        stages = resolve_swin_stages(
            name, stage_cfgs, depths, num_heads, embed_dims,
            stage_defaults=dict(window_size=window_size, with_cp=with_cp,
                                # mmdet's / mmseg's Swin shift every map; mmpretrain's and the released not
                                # one no larger than a window
                                pad_small_map=(not like_mmpretrain and building_scope() is not None)
                                if pad_small_map is None else pad_small_map),
            block_defaults=dict(mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop_rate,
                                proj_drop=block_drop, ffn_drop=block_drop, norm_cfg=inner_norm_cfg, act_cfg=act_cfg),
            drop_paths=self.drop_path_schedule(depths, drop_path_rate))
        # mmpretrain's out_after_downsample: a stage outputs its merged map (the next stage's width)
        self.out_after_downsample = out_after_downsample
        self._setup_outputs([stage['out_dims' if out_after_downsample else 'dims'] for stage in stages],
                            out_indices, frozen_stages, norm_eval, in_channels)
        self.convert_weights = convert_weights

        self.patch_embed = self._build_patch_embed(in_channels, embed_dims, patch_size, strides, patch_norm,
                                                   inner_norm_cfg, patch_cfg)
        self._setup_position_embedding(use_abs_pos_embed, embed_dims, patch_size, pretrain_img_size, img_size,
                                       patch_cfg, interpolate_mode, like_mmpretrain)
        self.drop_after_pos = nn.Dropout(drop_rate)
        self.stages = nn.ModuleList()
        for i, stage in enumerate(stages):
            downsample = None
            if stage['downsample_cfg'] is not None:
                downsample = self._merging_settings(stage['dims'], stage['out_dims'], i, strides, patch_norm,
                                                    inner_norm_cfg, stage['downsample_cfg'])
            self.stages.append(BOATSwinStage(
                stage['dims'], stage['blocks'], use_fsla=i in self.fsla_stages, downsample=downsample,
                output_after_downsample=out_after_downsample, drop=drop_rate, fsla_cfg=self.fsla_cfg,
                mask_padding=mask_padding, init_cfg=stage['init_cfg']))
        self._add_output_norms(output_norm_cfg)

    def _build_patch_embed(self, in_channels: int, embed_dims: int, patch_size: int, strides, patch_norm: bool,
                           norm_cfg: Optional[dict], patch_cfg: Optional[dict]) -> PatchEmbed:
        """The patch embedding as the stock Swins build it: a patch_size x patch_size convolution with stride
        ``strides[0]`` (mmdet / mmseg assert it equals ``patch_size``), its norm unless ``patch_norm`` is False,
        and mmpretrain's ``patch_cfg`` overriding any of its settings."""
        name = type(self).__name__
        refuse_unless(isinstance(patch_size, int) and patch_size >= 1, name, 'patch_size', patch_size,
                      'a positive int (released: 4)')
        if strides is not None:
            refuse_unless(to_pair(strides[0]) == to_pair(patch_size), name, 'strides', strides,
                          f'strides[0] must equal patch_size={patch_size}: a non-overlapping patch embedding')
        cfg = dict(patch_size=patch_size, stride=patch_size, padding='corner', dilation=1, bias=True,
                   norm_cfg=norm_cfg if patch_norm else None, init_cfg=None)
        patch_cfg = dict(patch_cfg or {})
        check_keys(name, 'patch_cfg', patch_cfg, PATCH_CFG_KEYS)
        check_overrides(name, 'patch_cfg', patch_cfg, dict(in_channels=in_channels, embed_dims=embed_dims))
        refuse_unless(patch_cfg.get('conv_type', PATCH_CONV_TYPES[0]) in PATCH_CONV_TYPES, name,
                      "patch_cfg['conv_type']", patch_cfg.get('conv_type'), f'one of {PATCH_CONV_TYPES}')
        cfg.update({PATCH_CFG_RENAMES.get(k, k): v for k, v in patch_cfg.items() if k in PATCH_CFG_SETTINGS})
        _check_sampler(name, 'patch_cfg', cfg['patch_size'], cfg['stride'], cfg['padding'], cfg['dilation'])
        return PatchEmbed(in_channels, embed_dims, **cfg)

    def _setup_position_embedding(self, use_abs_pos_embed: bool, embed_dims: int, patch_size: int,
                                  pretrain_img_size, img_size, patch_cfg: Optional[dict], interpolate_mode: str,
                                  like_mmpretrain: bool) -> None:
        """The stock absolute position embedding (``use_abs_pos_embed``): a (1, h * w, C) parameter over the
        patch grid of the pretraining size, mmdet's / mmseg's ``pretrain_img_size // patch_size`` or
        mmpretrain's patch embedding output for ``img_size`` (``patch_cfg`` ``input_size``), resized with
        ``interpolate_mode`` for other inputs. mmdet / mmseg freeze it with the patch embedding, mmpretrain
        does not."""
        self.interpolate_mode = interpolate_mode
        self.freeze_position_embedding = not like_mmpretrain
        self.position_grid = None
        if not use_abs_pos_embed:
            self.absolute_pos_embed = None
            return
        input_size = (patch_cfg or {}).get('input_size', img_size)
        if input_size is None and pretrain_img_size is None:  # each toolbox's default, 224
            input_size, pretrain_img_size = ((DEFAULT_PRETRAIN_IMG_SIZE, None) if like_mmpretrain
                                             else (None, DEFAULT_PRETRAIN_IMG_SIZE))
        grids = []
        if input_size is not None:  # mmpretrain's: the patch embedding's output for that size
            grids.append(self.patch_embed.out_size(image_size_pair(input_size)))
        if pretrain_img_size is not None:  # mmdet's / mmseg's: size // patch_size
            grids.append(tuple(s // patch_size for s in image_size_pair(pretrain_img_size)))
        refuse_unless(len(set(grids)) == 1, type(self).__name__, 'pretrain_img_size', pretrain_img_size,
                      f'give one pretraining size: img_size={img_size} sizes the position embedding to another '
                      f'patch grid')
        self.position_grid = grids[0]
        self.absolute_pos_embed = nn.Parameter(
            torch.zeros(1, self.position_grid[0] * self.position_grid[1], embed_dims))

    def _merging_settings(self, dims: int, out_dims: int, stage: int, strides, patch_norm: bool,
                          norm_cfg: Optional[dict], downsample_cfg: dict) -> dict:
        """``PatchMerging``'s arguments after ``stage``: a 2x2 kernel with stride ``strides[stage + 1]`` (mmdet /
        mmseg; default 2), its norm unless ``patch_norm`` is False, and mmpretrain's ``downsample_cfg`` for the
        stage overriding any of them."""
        name = type(self).__name__
        settings = dict(out_dims=out_dims, kernel_size=PATCH_MERGING_STRIDE, stride=None, padding='corner',
                        dilation=1, bias=False, norm_cfg=norm_cfg if patch_norm else None, init_cfg=None)
        if strides is not None:
            refuse_unless(len(strides) > stage + 1, name, 'strides', strides,
                          f'one stride per stage ({len(self.num_features)}): the patch embedding\'s, then each '
                          f'patch merging\'s')
            settings['stride'] = strides[stage + 1]
        where = f'stage_cfgs[{stage}].downsample_cfg'
        check_keys(name, where, downsample_cfg, DOWNSAMPLE_CFG_KEYS)
        settings.update({k: v for k, v in downsample_cfg.items() if k in settings})
        _check_sampler(name, f'stage {stage} patch merging', settings['kernel_size'],
                       settings['stride'] or settings['kernel_size'], settings['padding'], settings['dilation'])
        return settings

    @staticmethod
    def released_fsla_stages(num_stages: int) -> Tuple[int, ...]:
        """The released placement: every stage but the last (those larger than a window at 224)."""
        return tuple(range(num_stages - 1))

    @property
    def use_abs_pos_embed(self) -> bool:
        """The stock attribute: whether the backbone has an absolute position embedding."""
        return self.absolute_pos_embed is not None

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        x, hw_shape = self.patch_embed(x)
        if self.absolute_pos_embed is not None:
            x = x + resize_position_embedding(self.absolute_pos_embed, self.position_grid, hw_shape,
                                              self.interpolate_mode)
        return self.drop_after_pos(x), hw_shape

    def _adapt_checkpoint(self, weights: dict, own: dict) -> List[str]:
        """The window tables (``BOATBackbone``), and a checkpoint's absolute position embedding over another
        patch grid than this backbone's (a square one, as mmpretrain assumes), resized with
        ``interpolate_mode`` to this backbone's grid, as mmpretrain's load hook resizes it."""
        notes = super()._adapt_checkpoint(weights, own)
        key = POSITION_EMBEDDING_KEY
        if key not in weights or key not in own or weights[key].shape == own[key].shape:
            return notes
        length = weights[key].shape[1]
        side = math.isqrt(length)
        if side * side != length or weights[key].shape[2] != own[key].shape[2]:
            return notes  # reported as a shape mismatch
        weights[key] = resize_position_embedding(weights[key], (side, side), self.position_grid,
                                                 self.interpolate_mode)
        return notes + [f'resized {key} from a {side}x{side} to a {self.position_grid[0]}x'
                        f'{self.position_grid[1]} patch grid ({self.interpolate_mode})']

    def _init_fresh_weights(self) -> None:
        super()._init_fresh_weights()
        if self.absolute_pos_embed is not None:
            trunc_normal_(self.absolute_pos_embed, std=LINEAR_INIT_STD)

    def _freeze_stages(self) -> None:
        super()._freeze_stages()
        if self.frozen_stages >= 0 and self.absolute_pos_embed is not None and self.freeze_position_embedding:
            self.absolute_pos_embed.requires_grad = False
