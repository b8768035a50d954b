"""BOAT-Swin: Swin Transformer with feature-space local attention (BOAT, arXiv 2201.13027).

Every block is Swin's (shifted) window attention + MLP; the shifted (odd-index) blocks of the stages
listed in ``fsla_stages`` (released: stages 0-2, those larger than a window at 224) also run
feature-space local attention, on its own LayerNorm and *outside* drop path, as released:

    x = x + drop_path(SW-MSA(norm1(x)))
    x = x + FSLA(norm_fsla(x))
    x = x + drop_path(MLP(norm2(x)))

Any input size works: the patch embedding and patch merging pad odd sizes, windows are padded to
window multiples (padded keys are masked), and a map no larger than one window is not shifted (as in
the released models, whose last stage at 224 is exactly one window).

Parameter names follow the released checkpoints up to a short rename table (see ``boat_mm.models.utils.ckpt_convert``).
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...registry import register_model
from ...utils.torch_features import constant_under_compile
from ..layers.feature_space_attention import (
    DEFAULT_CLUSTER_SIZE,
    DEFAULT_KMEANS_ITERS,
    DEFAULT_OVERLAP,
    DEFAULT_TEMPERATURE,
)
from ..layers.transformer_layers import cache_outside_tracing, pad_to_multiple
from ..utils.toolbox_args import (
    UNSET,
    check_act_cfg,
    check_empty_cfg,
    check_image_size,
    check_norm_cfg,
    check_rate,
    init_cfg_from_pretrained,
    refuse_unless,
    resolve_arch,
    resolve_stage_windows,
)
from .base_backbone import BilateralBlock, BOATBackbone

__all__ = ['BOATSwinTransformer', 'BOATSwinStage', 'BOATSwinBlock', 'WindowMSA', 'PatchEmbed', 'PatchMerging',
           'window_partition', 'window_reverse']

# Logit added between tokens of different shifted-window regions, as in Swin and the released BOAT.
SHIFT_MASK_VALUE = -100.0
DEFAULT_WINDOW_SIZE = 7
PATCH_SIZE = 4
PATCH_MERGING_STRIDE = 2
# Bound of the shifted-window mask cache (all devices together; a mask is ~12 MiB at stage 1 of 800x1216).
WINDOW_MASK_CACHE_BYTES = 64 << 20
WINDOW_MASK_CACHE_ENTRIES = 128


@constant_under_compile  # compiled graphs hold the mask, not the ops that build it on the CPU
@cache_outside_tracing(maxsize=WINDOW_MASK_CACHE_ENTRIES, max_bytes=WINDOW_MASK_CACHE_BYTES)
def _window_mask(height: int, width: int, window: int, shift: int,
                 device: torch.device) -> Optional[torch.Tensor]:
    """Additive (num_windows, window**2, window**2) mask for a (height, width) map padded to window
    multiples and cyclically shifted by ``shift``; None when neither padding nor shift is present.

    Tokens of different shift regions see each other through SHIFT_MASK_VALUE (as released); padded
    tokens are their own region and are never seen by a real token (-inf)."""
    padded_h, padded_w = -(-height // window) * window, -(-width // window) * window
    if shift == 0 and (padded_h, padded_w) == (height, width):
        return None
    region = torch.zeros(padded_h, padded_w, dtype=torch.long)
    if shift > 0:
        slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
        for i, hs in enumerate(slices):
            for j, ws in enumerate(slices):
                region[hs, ws] = i * 3 + j
    is_pad = torch.ones(padded_h, padded_w, dtype=torch.bool)
    is_pad[:height, :width] = False
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


class WindowMSA(nn.Module):
    """Window multi-head self-attention with a learned relative position bias (Swin)."""

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, qk_scale: Optional[float] = None):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = qk_scale or (embed_dims // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size),
                                            indexing='ij')).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
        index = relative[..., 0] * (2 * window_size - 1) + relative[..., 1]
        # Rebuilt from window_size, so not saved (the converter drops the released copy).
        self.register_buffer('relative_position_index', index, persistent=False)
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
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            num_windows = mask.shape[0]
            attn = attn.view(bw // num_windows, num_windows, self.num_heads, n, n)
            attn = (attn + mask.to(attn.dtype).unsqueeze(1).unsqueeze(0)).view(bw, self.num_heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(x))


class BOATSwinBlock(BilateralBlock):
    """One BOAT-Swin block: (shifted) window attention, optional FSLA (not under drop path, as released),
    MLP; pre-norm residuals. Arguments of ``BilateralBlock``; FSLA's output dropout is ``drop``."""
    fsla_under_drop_path = False

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, shift: bool, use_fsla: bool,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, fsla_cfg: Optional[dict] = None, with_cp: bool = False,
                 qk_scale: Optional[float] = None):
        super().__init__(embed_dims=embed_dims, num_heads=num_heads, use_fsla=use_fsla, fsla_cfg=fsla_cfg,
                         qkv_bias=qkv_bias, attn_drop=attn_drop, fsla_proj_drop=drop, mlp_ratio=mlp_ratio,
                         drop=drop, drop_path=drop_path, with_cp=with_cp,
                         image_attention_cfg=dict(window_size=window_size, shift=shift, qk_scale=qk_scale))

    def _build_image_attention(self, *, embed_dims: int, num_heads: int, qkv_bias: bool, attn_drop: float,
                               drop: float, window_size: int, shift: bool, qk_scale: Optional[float]) -> None:
        self.window_size = window_size
        self.shift_size = window_size // 2 if shift else 0
        self.attn = WindowMSA(embed_dims, num_heads, window_size, qkv_bias, attn_drop, drop, qk_scale)

    def image_attention(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        height, width = hw_shape
        b, _, c = x.shape
        window = self.window_size
        # A map no larger than one window is not shifted (as the released models at their last stage).
        shift = self.shift_size if min(height, width) > window else 0
        x = x.view(b, height, width, c)
        x, pad_h, pad_w = pad_to_multiple(x, window, window)
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        mask = _window_mask(height, width, window, shift, x.device)
        out = self.attn(window_partition(x, window), mask)
        out = window_reverse(out, window, height + pad_h, width + pad_w)
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        return out[:, :height, :width].reshape(b, height * width, c)


class PatchMerging(nn.Module):
    """Swin patch merging: 2x2 neighbours concatenated (released order), LayerNorm (none with mmdet's / mmseg's
    ``patch_norm=False``), Linear 4C -> 2C.

    Odd maps are zero-padded at the bottom/right first."""

    def __init__(self, embed_dims: int, norm: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(4 * embed_dims) if norm else nn.Identity()
        self.reduction = nn.Linear(4 * embed_dims, 2 * embed_dims, bias=False)

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> Tuple[torch.Tensor, Tuple[int, int]]:
        b, _, c = x.shape
        x, _, _ = pad_to_multiple(x.view(b, *hw_shape, c), 2, 2)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        out_hw = x.shape[1:3]
        return self.reduction(self.norm(x.reshape(b, -1, 4 * c))), tuple(out_hw)


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding (conv patch x patch) + LayerNorm (unless ``patch_norm`` is False, as the
    stock Swins take it); pads odd image sizes."""

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int = PATCH_SIZE, patch_norm: bool = True):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dims, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dims) if patch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        pad_h, pad_w = (-x.shape[2]) % self.patch_size, (-x.shape[3]) % self.patch_size
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x)
        hw_shape = tuple(x.shape[2:])
        return self.norm(x.flatten(2).transpose(1, 2)), hw_shape


class BOATSwinStage(nn.Module):
    """Blocks of one resolution, then (except for the last stage) patch merging."""

    def __init__(self, embed_dims: int, depth: int, num_heads: int, window_sizes: Sequence[int], use_fsla: bool,
                 drop_paths: Sequence[float], downsample: bool, output_after_downsample: bool = False,
                 patch_norm: bool = True, **block_kwargs):
        super().__init__()
        self.output_after_downsample = output_after_downsample
        self.blocks = nn.ModuleList([
            BOATSwinBlock(embed_dims, num_heads, window_sizes[i], shift=i % 2 == 1,
                          use_fsla=use_fsla and i % 2 == 1, drop_path=drop_paths[i], **block_kwargs)
            for i in range(depth)])
        self.downsample = PatchMerging(embed_dims, norm=patch_norm) if downsample else None

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
            over blocks; FSLA is not under drop path, as released).
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

    Stock arguments accepted because they change nothing here: ``pretrain_img_size`` and ``img_size``
    (they size absolute position embeddings, which BOAT has not), ``interpolate_mode`` (resizes those),
    ``pad_small_map`` (maps smaller than a window are always padded, with the padded keys masked); both must
    be valid (an image size of length 1 or 2, as the stock Swin asserts).
    Honoured as mmpretrain takes it: ``stage_cfgs`` (one dict for every stage or one per stage) with
    ``window_size`` and ``block_cfgs`` (one dict for every block or one per block) with ``window_size``: the
    window of each block (mmpretrain's 384-pixel configs: ``stage_cfgs=dict(block_cfgs=dict(window_size=12))``);
    other keys there are refused, naming them.
    Honoured with the stock meaning too: mmdet's / mmseg's ``patch_norm`` (False: no LayerNorm in the patch
    embedding nor in the patch mergings, as they build it) and mmpretrain's ``out_after_downsample`` (True:
    every stage but the last outputs its merged map, with twice the channels, and its output norm is sized to
    them).
    Refused with a ``ValueError`` at construction, because BOAT does not build them yet:
    ``use_abs_pos_embed=True``, ``strides`` other than ``(patch_size, 2, 2, 2)``, ``act_cfg`` other than
    GELU, ``norm_cfg`` other than LN, non-empty ``patch_cfg``. Bad values (non-finite or non-positive FSLA
    settings, ``in_channels`` < 1, ``drop_path_rate`` outside [0, 1)) are refused too, and a batch of zero
    images at the first forward.
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
                 # stock arguments checked against what BOAT can honour
                 strides: Optional[Sequence[int]] = None, patch_norm: bool = True,
                 use_abs_pos_embed: bool = False, act_cfg: Optional[dict] = None, norm_cfg: Optional[dict] = None,
                 out_after_downsample: bool = False, stage_cfgs: Optional[dict] = None,
                 patch_cfg: Optional[dict] = None, convert_weights: bool = False, pretrained: Optional[str] = None,
                 # stock arguments with no effect on BOAT (see the class docstring)
                 pretrain_img_size=None, img_size=None, interpolate_mode: str = 'bicubic',
                 pad_small_map: bool = False,
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
        self._check_stock_arguments(num_stages, patch_size, strides, use_abs_pos_embed, act_cfg, norm_cfg,
                                    patch_cfg)
        check_image_size(type(self).__name__, 'pretrain_img_size', pretrain_img_size)
        check_image_size(type(self).__name__, 'img_size', img_size)
        check_rate(type(self).__name__, 'drop_path_rate', drop_path_rate)
        self._setup_fsla(num_stages, fsla_stages, fsla_cfg, cluster_size=cluster_size, overlap=overlap,
                         kmeans_iters=kmeans_iters, temperature=temperature, fsla_qk_scale=fsla_qk_scale)
        if window_size < 1:
            raise ValueError(f'window_size must be >= 1, got {window_size}')
        windows = resolve_stage_windows(type(self).__name__, stage_cfgs, window_size, depths)
        embed_dims = settings['embed_dims']
        stage_dims = [embed_dims * 2 ** i for i in range(num_stages)]
        # mmpretrain's out_after_downsample: every stage but the last outputs its merged (doubled) channels
        self.out_after_downsample = out_after_downsample
        self._setup_outputs(stage_dims[1:] + stage_dims[-1:] if out_after_downsample else stage_dims,
                            out_indices, frozen_stages, norm_eval, in_channels)
        self.convert_weights = convert_weights

        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size, patch_norm)
        self.drop_after_pos = nn.Dropout(drop_rate)
        drop_paths = self.drop_path_schedule(depths, drop_path_rate)
        self.stages = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            self.stages.append(BOATSwinStage(
                stage_dims[i], depth, heads, windows[i], use_fsla=i in self.fsla_stages,
                drop_paths=drop_paths[i], downsample=i < num_stages - 1,
                output_after_downsample=out_after_downsample, patch_norm=patch_norm,
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate,
                attn_drop=attn_drop_rate, fsla_cfg=self.fsla_cfg, with_cp=with_cp))
        self._add_output_norms()

    @staticmethod
    def released_fsla_stages(num_stages: int) -> Tuple[int, ...]:
        """The released placement: every stage but the last (those larger than a window at 224)."""
        return tuple(range(num_stages - 1))

    @classmethod
    def _check_stock_arguments(cls, num_stages, patch_size, strides, use_abs_pos_embed, act_cfg, norm_cfg,
                               patch_cfg) -> None:
        """Refuse, at construction, every stock Swin setting that BOAT-Swin cannot honour."""
        name = cls.__name__
        refuse_unless(isinstance(patch_size, int) and patch_size >= 1, name, 'patch_size', patch_size,
                      'a positive int (released: 4)')
        expected_strides = (patch_size,) + (PATCH_MERGING_STRIDE,) * (num_stages - 1)
        refuse_unless(strides is None or tuple(strides) == expected_strides, name, 'strides', strides,
                      f'the patch embedding strides by patch_size and every patch merging by '
                      f'{PATCH_MERGING_STRIDE}: strides={expected_strides}')
        refuse_unless(not use_abs_pos_embed, name, 'use_abs_pos_embed', use_abs_pos_embed,
                      'BOAT-Swin has no absolute position embedding (use_abs_pos_embed=False)')
        check_act_cfg(name, act_cfg)
        check_norm_cfg(name, norm_cfg)
        check_empty_cfg(name, 'patch_cfg', patch_cfg)

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        x, hw_shape = self.patch_embed(x)
        return self.drop_after_pos(x), hw_shape
