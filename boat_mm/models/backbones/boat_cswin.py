"""BOAT-CSWin: CSWin Transformer with feature-space local attention (BOAT, arXiv 2201.13027).

Blocks use CSWin's cross-shaped window attention: one qkv projection whose channels are split between
a vertical-stripe and a horizontal-stripe branch, each with its own LePE depthwise conv (computed inside
the stripe, as released); the last stage attends globally with one branch. The even-index blocks of
every stage also run feature-space local attention, on its own LayerNorm and *under* drop path:

    x = x + drop_path(proj(cross_shaped_attention(norm1(x))))
    x = x + drop_path(FSLA(norm_fsla(x)))          # even blocks
    x = x + drop_path(MLP(norm2(x)))

The released BOAT-CSWin models computed FSLA with scale 1.0 (their code passed ``qkv_bias=True`` as
``qk_scale``); ``fsla_cfg=dict(qk_scale=1.0)`` (the default) reproduces that. Any input size works: stripes
are padded to stripe multiples with the padded keys masked; the stem and merges are strided convolutions.
"""
import warnings
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...registry import register_model
from ..layers.feature_space_attention import (
    DEFAULT_CLUSTER_SIZE,
    DEFAULT_KMEANS_ITERS,
    DEFAULT_OVERLAP,
    DEFAULT_TEMPERATURE,
)
from ..layers.transformer_layers import pad_to_multiple, tokens_to_nchw
from ..utils.toolbox_args import (
    UNSET,
    check_image_size,
    check_rate,
    init_cfg_from_pretrained,
    merge_alias,
    resolve_arch,
)
from .base_backbone import BilateralBlock, BOATBackbone

__all__ = ['BOATCSWinTransformer', 'BOATCSWinStage', 'BOATCSWinBlock', 'StripeAttention', 'ConvEmbed']

# Released BOAT-CSWin FSLA scale (see the module docstring).
RELEASED_CSWIN_FSLA_SCALE = 1.0
STEM_KERNEL, STEM_STRIDE, STEM_PADDING = 7, 4, 2
DEFAULT_IN_CHANNELS = 3


class StripeAttention(nn.Module):
    """One branch of cross-shaped attention over stripes of ``stripe_h`` x ``stripe_w`` tokens.

    ``stripe_h``/``stripe_w`` of None mean the full map height/width: (None, s) are vertical stripes
    of width s, (s, None) horizontal stripes, (None, None) global attention. LePE: a depthwise 3x3 conv
    on v inside each stripe (zero outside it), added to the attention output.
    """

    def __init__(self, embed_dims: int, num_heads: int, stripe_h: Optional[int], stripe_w: Optional[int],
                 attn_drop: float = 0.0, qk_scale: Optional[float] = None):
        super().__init__()
        self.num_heads = num_heads
        self.stripe_h, self.stripe_w = stripe_h, stripe_w
        self.scale = qk_scale or (embed_dims // num_heads) ** -0.5
        self.lepe = nn.Conv2d(embed_dims, embed_dims, kernel_size=3, padding=1, groups=embed_dims)
        self.attn_drop = nn.Dropout(attn_drop)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v: (B, H, W, C) maps; returns (B, H, W, C)."""
        b, height, width, c = q.shape
        sh = self.stripe_h or height
        sw = self.stripe_w or width
        q, pad_h, pad_w = pad_to_multiple(q, sh, sw)
        k, _, _ = pad_to_multiple(k, sh, sw)
        v, _, _ = pad_to_multiple(v, sh, sw)
        padded_h, padded_w = height + pad_h, width + pad_w
        heads, head_dims = self.num_heads, c // self.num_heads

        def stripes(t):  # (B, Hp, Wp, C) -> (B * stripes, heads, sh * sw, head_dims)
            t = t.view(b, padded_h // sh, sh, padded_w // sw, sw, heads, head_dims)
            return t.permute(0, 1, 3, 5, 2, 4, 6).reshape(-1, heads, sh * sw, head_dims)

        v_stripes = v.view(b, padded_h // sh, sh, padded_w // sw, sw, c).permute(0, 1, 3, 5, 2, 4)
        lepe = self.lepe(v_stripes.reshape(-1, c, sh, sw).contiguous())  # contiguous: the released conv path
        lepe = lepe.view(-1, heads, head_dims, sh * sw).transpose(-1, -2)
        attn = (stripes(q) * self.scale) @ stripes(k).transpose(-2, -1)
        if pad_h or pad_w:  # padding is < one stripe, so every stripe keeps a real key
            is_pad = torch.ones(padded_h, padded_w, dtype=torch.bool, device=q.device)
            is_pad[:height, :width] = False
            key_pad = is_pad.view(padded_h // sh, sh, padded_w // sw, sw).transpose(1, 2).reshape(-1, sh * sw)
            attn = attn.view(b, -1, heads, sh * sw, sh * sw).masked_fill(
                key_pad.view(1, -1, 1, 1, sh * sw), float('-inf')).view(-1, heads, sh * sw, sh * sw)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = attn @ stripes(v) + lepe  # (B * stripes, heads, sh * sw, head_dims)
        out = out.view(b, padded_h // sh, padded_w // sw, heads, sh, sw, head_dims)
        out = out.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, padded_h, padded_w, c)
        return out[:, :height, :width]


class BOATCSWinBlock(BilateralBlock):
    """One BOAT-CSWin block: cross-shaped window attention, optional FSLA (under drop path, as released),
    MLP; pre-norm residuals. Arguments of ``BilateralBlock``; as released, FSLA's output dropout uses the
    attention dropout rate."""
    fsla_under_drop_path = True

    def __init__(self, embed_dims: int, num_heads: int, split_size: int, last_stage: bool, use_fsla: bool,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, fsla_cfg: Optional[dict] = None, with_cp: bool = False,
                 qk_scale: Optional[float] = None):
        super().__init__(embed_dims=embed_dims, num_heads=num_heads, use_fsla=use_fsla, fsla_cfg=fsla_cfg,
                         qkv_bias=qkv_bias, attn_drop=attn_drop, fsla_proj_drop=attn_drop, mlp_ratio=mlp_ratio,
                         drop=drop, drop_path=drop_path, with_cp=with_cp,
                         image_attention_cfg=dict(split_size=split_size, last_stage=last_stage, qk_scale=qk_scale))

    def _build_image_attention(self, *, embed_dims: int, num_heads: int, qkv_bias: bool, attn_drop: float,
                               drop: float, split_size: int, last_stage: bool, qk_scale: Optional[float]) -> None:
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        if last_stage:
            self.attns = nn.ModuleList([StripeAttention(embed_dims, num_heads, None, None, attn_drop, qk_scale)])
        else:
            half_dims, half_heads = embed_dims // 2, num_heads // 2
            self.attns = nn.ModuleList([
                StripeAttention(half_dims, half_heads, None, split_size, attn_drop, qk_scale),   # vertical
                StripeAttention(half_dims, half_heads, split_size, None, attn_drop, qk_scale)])  # horizontal
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(drop)

    def image_attention(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, *hw_shape, 3, c).unbind(3)
        branch_dims = c // len(self.attns)
        outs = [attn(q[..., i * branch_dims:(i + 1) * branch_dims], k[..., i * branch_dims:(i + 1) * branch_dims],
                     v[..., i * branch_dims:(i + 1) * branch_dims]) for i, attn in enumerate(self.attns)]
        return self.proj_drop(self.proj(torch.cat(outs, dim=-1).reshape(b, n, c)))


class ConvEmbed(nn.Module):
    """Strided convolution + LayerNorm: the CSWin stem (7x7/4) and stage merges (3x3/2).

    Inputs smaller than the kernel's reach are zero-padded at the bottom/right (a 1x1 image works)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)
        self.norm = nn.LayerNorm(out_channels)
        self.min_size = kernel_size - 2 * padding

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        short_h, short_w = max(0, self.min_size - x.shape[2]), max(0, self.min_size - x.shape[3])
        if short_h or short_w:
            x = F.pad(x, (0, short_w, 0, short_h))
        x = self.proj(x)
        return self.norm(x.flatten(2).transpose(1, 2)), tuple(x.shape[2:])


class BOATCSWinStage(nn.Module):
    """(Except for the first stage) a 3x3/2 conv merge, then the blocks of one resolution."""

    def __init__(self, in_dims: Optional[int], embed_dims: int, depth: int, num_heads: int, split_size: int,
                 last_stage: bool, use_fsla: bool, drop_paths: Sequence[float], **block_kwargs):
        super().__init__()
        self.downsample = ConvEmbed(in_dims, embed_dims, 3, 2, 1) if in_dims else None
        self.blocks = nn.ModuleList([
            BOATCSWinBlock(embed_dims, num_heads, split_size, last_stage, use_fsla=use_fsla and i % 2 == 0,
                           drop_path=drop_paths[i], **block_kwargs)
            for i in range(depth)])

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int]):
        """-> (stage output, its (H, W), next stage's input, its (H, W)); the merge comes first."""
        if self.downsample is not None:
            x, hw_shape = self.downsample(tokens_to_nchw(x, hw_shape))
        for block in self.blocks:
            x = block(x, hw_shape)
        return x, hw_shape, x, hw_shape


@register_model
class BOATCSWinTransformer(BOATBackbone):
    """BOAT-CSWin backbone for mmpretrain, mmdet and mmseg, and a drop-in for the official ``CSWin``.

    Args:
        arch: 'tiny'/'small'/'base' (or 't'/'s'/'b'), or a dict with keys ``embed_dims``, ``depths``,
            ``num_heads``, ``split_sizes``. Alternatively give those directly (missing ones default to the
            tiny model); both ways at once must agree. Channels double at every stage.
        in_channels: image channels.
        mlp_ratio: MLP hidden / embed dims.
        qkv_bias: bias in all qkv projections (released: True).
        qk_scale: stripe-attention scale (None: head_dim ** -0.5); FSLA keeps ``fsla_cfg['qk_scale']``.
        drop_rate, attn_drop_rate, drop_path_rate: dropout, attention dropout, stochastic depth.
        fsla_stages: stages whose even-index blocks carry FSLA; None: every stage (released); ``()``
            builds plain CSWin. ``with_fsla`` is its deprecated spelling (False: ``fsla_stages=()``).
        fsla_cfg: FSLA settings as in BOAT-Swin (``cluster_size``, ``overlap``, ``kmeans_iters``, ``temperature``,
            ``qk_scale``), released values by default; here ``qk_scale`` defaults to 1.0, the scale the released
            BOAT-CSWin was trained with (None: head_dim ** -0.5). The flat ``cluster_size=`` ... ``fsla_qk_scale=``
            are deprecated aliases.
        out_indices: stages whose outputs are returned; None: the building toolbox's default, the last stage
            under mmpretrain, every stage otherwise.
        frozen_stages: as BOAT-Swin's: stages 0..k-1 under mmdet / mmseg, 0..k under mmpretrain.
        norm_eval, with_cp, init_cfg: as in the OpenMMLab backbones.
        convert_weights: accepted as in BOAT-Swin: an ``init_cfg`` checkpoint in an upstream layout (official
            CSWin, released BOAT-CSWin) is recognised by its keys and converted on load, whether set or not;
            parameters it lacks keep their fresh initialisation and are listed in the log.
        pretrained: deprecated alias of ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``.

    The names of the official CSWin segmentation backbone (``CSWin(img_size, patch_size, in_chans,
    embed_dim, depth, split_size, num_heads, mlp_ratio, qkv_bias, qk_scale, drop_rate, attn_drop_rate,
    drop_path_rate, use_chk)``) are accepted too, so its UperNet configs swap by changing ``type`` alone:
    ``in_chans``, ``embed_dim``, ``depth``, ``split_size`` (a list, or one int for every stage) and
    ``use_chk`` are aliases of ``in_channels``, ``embed_dims``, ``depths``, ``split_sizes``, ``with_cp``;
    ``img_size`` changes nothing (it only sized the official stem's reshape), nor does ``patch_size``, which
    the official code ignores too (the stem is a 7x7 convolution of stride 4): a value other than 4 warns.
    """
    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'], dict(embed_dims=64, depths=(1, 2, 21, 1), num_heads=(2, 4, 8, 16),
                                            split_sizes=(1, 2, 7, 7))),
        **dict.fromkeys(['s', 'small'], dict(embed_dims=64, depths=(2, 4, 32, 2), num_heads=(2, 4, 8, 16),
                                             split_sizes=(1, 2, 7, 7))),
        **dict.fromkeys(['b', 'base'], dict(embed_dims=96, depths=(2, 4, 32, 2), num_heads=(4, 8, 16, 32),
                                            split_sizes=(1, 2, 7, 7))),
    }
    essential_keys = ('embed_dims', 'depths', 'num_heads', 'split_sizes')
    downsample_before_blocks = True  # each stage after the first starts with its strided convolution
    default_fsla_cfg = dict(cluster_size=DEFAULT_CLUSTER_SIZE, overlap=DEFAULT_OVERLAP,
                            kmeans_iters=DEFAULT_KMEANS_ITERS, temperature=DEFAULT_TEMPERATURE,
                            qk_scale=RELEASED_CSWIN_FSLA_SCALE)

    def __init__(self, arch=None, in_channels: Optional[int] = None, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 fsla_stages: Optional[Sequence[int]] = None, fsla_cfg: Optional[dict] = None,
                 with_fsla: Optional[bool] = None,
                 out_indices: Optional[Sequence[int]] = None, frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: Optional[bool] = None, init_cfg=None, convert_weights: bool = False,
                 pretrained: Optional[str] = None,
                 # the architecture the OpenMMLab way
                 embed_dims: Optional[int] = None, depths: Optional[Sequence[int]] = None,
                 num_heads: Optional[Sequence[int]] = None, split_sizes: Optional[Sequence[int]] = None,
                 # the official CSWin segmentation backbone's names (see the class docstring)
                 img_size=None, patch_size: int = STEM_STRIDE, in_chans: Optional[int] = None,
                 embed_dim: Optional[int] = None, depth: Optional[Sequence[int]] = None,
                 split_size=None, use_chk: Optional[bool] = None,
                 # deprecated spellings of fsla_cfg's keys
                 cluster_size=UNSET, overlap=UNSET, kmeans_iters=UNSET, temperature=UNSET, fsla_qk_scale=UNSET):
        name = type(self).__name__
        super().__init__(init_cfg=init_cfg_from_pretrained(name, pretrained, init_cfg))
        if patch_size != STEM_STRIDE:  # accepted as the official CSWin accepts it (its default is 16), and said
            warnings.warn(f'{name}: patch_size={patch_size!r} changes nothing, as in the official CSWin: the stem '
                          f'is a {STEM_KERNEL}x{STEM_KERNEL} convolution of stride {STEM_STRIDE}', stacklevel=2)
        in_channels = merge_alias(name, 'in_channels', in_channels, 'in_chans', in_chans)
        in_channels = DEFAULT_IN_CHANNELS if in_channels is None else in_channels
        with_cp = bool(merge_alias(name, 'with_cp', with_cp, 'use_chk', use_chk))
        depths = merge_alias(name, 'depths', depths, 'depth', depth)
        embed_dims = merge_alias(name, 'embed_dims', embed_dims, 'embed_dim', embed_dim)
        if isinstance(split_size, int):
            split_size = (split_size,) * len(depths or self.arch_zoo['tiny']['depths'])
        split_sizes = merge_alias(name, 'split_sizes', split_sizes, 'split_size', split_size)
        settings = resolve_arch(name, arch, dict(embed_dims=embed_dims, depths=depths, num_heads=num_heads,
                                                 split_sizes=split_sizes), self.arch_zoo, self.essential_keys)
        depths, num_heads = tuple(settings['depths']), tuple(settings['num_heads'])
        split_sizes = tuple(settings['split_sizes'])
        num_stages = len(depths)
        if not len(num_heads) == len(split_sizes) == num_stages:
            raise ValueError(f'depths, num_heads and split_sizes must have the same length, got '
                             f'{depths}, {num_heads}, {split_sizes}')
        check_image_size(name, 'img_size', img_size)
        check_rate(name, 'drop_path_rate', drop_path_rate)
        self._setup_fsla(num_stages, fsla_stages, fsla_cfg, with_fsla, cluster_size=cluster_size, overlap=overlap,
                         kmeans_iters=kmeans_iters, temperature=temperature, fsla_qk_scale=fsla_qk_scale)
        embed_dims = settings['embed_dims']
        self._setup_outputs([embed_dims * 2 ** i for i in range(num_stages)], out_indices, frozen_stages,
                            norm_eval, in_channels)
        for i, (dims, heads) in enumerate(zip(self.num_features, num_heads)):
            branches = 1 if i == num_stages - 1 else 2
            if heads % branches or dims % heads:
                raise ValueError(f'stage {i}: {dims} channels and {heads} heads must split evenly over '
                                 f'{branches} branch(es)')
        self.convert_weights = convert_weights

        self.patch_embed = ConvEmbed(in_channels, embed_dims, STEM_KERNEL, STEM_STRIDE, STEM_PADDING)
        drop_paths = self.drop_path_schedule(depths, drop_path_rate)
        self.stages = nn.ModuleList()
        for i in range(num_stages):
            self.stages.append(BOATCSWinStage(
                self.num_features[i - 1] if i else None, self.num_features[i], depths[i], num_heads[i],
                split_sizes[i], last_stage=i == num_stages - 1, use_fsla=i in self.fsla_stages,
                drop_paths=drop_paths[i],
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate,
                attn_drop=attn_drop_rate, fsla_cfg=self.fsla_cfg, with_cp=with_cp))
        self._add_output_norms()

    @staticmethod
    def released_fsla_stages(num_stages: int) -> Tuple[int, ...]:
        """The released placement: every stage."""
        return tuple(range(num_stages))

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        return self.patch_embed(x)
