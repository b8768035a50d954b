"""BOAT-CSWin: CSWin Transformer with feature-space local attention (BOAT, arXiv 2201.13027).

Blocks use CSWin's cross-shaped window attention: one qkv projection whose channels are split between
a vertical-stripe and a horizontal-stripe branch, each with its own LePE depthwise conv (computed inside
the stripe, as released); the last stage attends globally with one branch. The even-index blocks of
every stage also run feature-space local attention, on its own LayerNorm and *under* drop path:

    x = x + drop_path(proj(cross_shaped_attention(norm1(x))))
    x = x + drop_path(FSLA(norm_fsla(x)))          # even blocks
    x = x + drop_path(MLP(norm2(x)))

The released BOAT-CSWin models computed FSLA with scale 1.0 (their code passed ``qkv_bias=True`` as
``qk_scale``); ``fsla_qk_scale=1.0`` reproduces that. Any input size works: stripes are padded to
stripe multiples with the padded keys masked; the stem and merges are strided convolutions.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import register_model
from .feature_space_attention import (DEFAULT_CLUSTER_SIZE, DEFAULT_KMEANS_ITERS, DEFAULT_OVERLAP,
                                      DEFAULT_TEMPERATURE)
from .base_backbone import BilateralBlock, BOATBackbone
from .layers import pad_to_multiple, parse_arch, tokens_to_nchw

__all__ = ['BOATCSWinTransformer']

# Released BOAT-CSWin FSLA scale (see the module docstring).
RELEASED_CSWIN_FSLA_SCALE = 1.0
STEM_KERNEL, STEM_STRIDE, STEM_PADDING = 7, 4, 2


class StripeAttention(nn.Module):
    """One branch of cross-shaped attention over stripes of ``stripe_h`` x ``stripe_w`` tokens.

    ``stripe_h``/``stripe_w`` of None mean the full map height/width: (None, s) are vertical stripes
    of width s, (s, None) horizontal stripes, (None, None) global attention. LePE: a depthwise 3x3 conv
    on v inside each stripe (zero outside it), added to the attention output.
    """

    def __init__(self, embed_dims: int, num_heads: int, stripe_h: Optional[int], stripe_w: Optional[int],
                 attn_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.stripe_h, self.stripe_w = stripe_h, stripe_w
        self.scale = (embed_dims // num_heads) ** -0.5
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
    """One BOAT-CSWin block: cross-shaped window attention, optional FSLA, MLP; pre-norm residuals."""

    def __init__(self, embed_dims: int, num_heads: int, split_size: int, last_stage: bool, use_fsla: bool,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, fsla_cfg: Optional[dict] = None, with_cp: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims)
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        if last_stage:
            self.attns = nn.ModuleList([StripeAttention(embed_dims, num_heads, None, None, attn_drop)])
        else:
            half_dims, half_heads = embed_dims // 2, num_heads // 2
            self.attns = nn.ModuleList([
                StripeAttention(half_dims, half_heads, None, split_size, attn_drop),   # vertical stripes
                StripeAttention(half_dims, half_heads, split_size, None, attn_drop)])  # horizontal stripes
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(drop)
        # As released, the FSLA output dropout of BOAT-CSWin uses the attention dropout rate.
        self._build_shared(embed_dims, num_heads, use_fsla, fsla_cfg, qkv_bias, attn_drop, attn_drop, mlp_ratio,
                           drop, drop_path, with_cp)

    def _cross_shaped_attention(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, *hw_shape, 3, c).unbind(3)
        branch_dims = c // len(self.attns)
        outs = [attn(q[..., i * branch_dims:(i + 1) * branch_dims], k[..., i * branch_dims:(i + 1) * branch_dims],
                     v[..., i * branch_dims:(i + 1) * branch_dims]) for i, attn in enumerate(self.attns)]
        return self.proj_drop(self.proj(torch.cat(outs, dim=-1).reshape(b, n, c)))

    def _forward(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self._cross_shaped_attention(self.norm1(x), hw_shape))
        if self.fsla is not None:
            x = x + self.drop_path(self.fsla(self.norm_fsla(x), hw_shape))
        return x + self.drop_path(self.mlp(self.norm2(x)))


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
                 last_stage: bool, with_fsla: bool, drop_paths: Sequence[float], **block_kwargs):
        super().__init__()
        self.downsample = ConvEmbed(in_dims, embed_dims, 3, 2, 1) if in_dims else None
        self.blocks = nn.ModuleList([
            BOATCSWinBlock(embed_dims, num_heads, split_size, last_stage, use_fsla=with_fsla and i % 2 == 0,
                           drop_path=drop_paths[i], **block_kwargs)
            for i in range(depth)])


@register_model
class BOATCSWinTransformer(BOATBackbone):
    """BOAT-CSWin backbone for mmpretrain, mmdet and mmseg.

    Args:
        arch: 'tiny'/'small'/'base' (or 't'/'s'/'b'), or a dict with keys ``embed_dims``, ``depths``,
            ``num_heads``, ``split_sizes``.
        in_channels: image channels.
        mlp_ratio: MLP hidden / embed dims.
        qkv_bias: bias in all qkv projections (released: True).
        drop_rate, attn_drop_rate, drop_path_rate: dropout, attention dropout, stochastic depth.
        cluster_size, overlap, kmeans_iters, temperature: FSLA settings, released defaults.
        fsla_qk_scale: FSLA attention scale; released BOAT-CSWin: 1.0 (None: head_dim ** -0.5).
        with_fsla: False builds the plain CSWin network (no FSLA blocks), e.g. as a speed baseline.
        out_indices, frozen_stages, norm_eval, with_cp, init_cfg: as in the OpenMMLab backbones.
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

    def __init__(self, arch='tiny', in_channels: int = 3, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 cluster_size: int = DEFAULT_CLUSTER_SIZE, overlap: int = DEFAULT_OVERLAP,
                 kmeans_iters: int = DEFAULT_KMEANS_ITERS, temperature: float = DEFAULT_TEMPERATURE,
                 fsla_qk_scale: Optional[float] = RELEASED_CSWIN_FSLA_SCALE, with_fsla: bool = True,
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        settings = parse_arch(arch, self.arch_zoo, self.essential_keys, type(self).__name__)
        depths, num_heads = tuple(settings['depths']), tuple(settings['num_heads'])
        split_sizes = tuple(settings['split_sizes'])
        num_stages = len(depths)
        if not len(num_heads) == len(split_sizes) == num_stages:
            raise ValueError(f'depths, num_heads and split_sizes must have the same length, got '
                             f'{depths}, {num_heads}, {split_sizes}')
        embed_dims = settings['embed_dims']
        self._setup_outputs([embed_dims * 2 ** i for i in range(num_stages)], out_indices, frozen_stages,
                            norm_eval, in_channels)
        for i, (dims, heads) in enumerate(zip(self.num_features, num_heads)):
            branches = 1 if i == num_stages - 1 else 2
            if heads % branches or dims % heads:
                raise ValueError(f'stage {i}: {dims} channels and {heads} heads must split evenly over '
                                 f'{branches} branch(es)')
        fsla_cfg = dict(cluster_size=cluster_size, overlap=overlap, kmeans_iters=kmeans_iters,
                        temperature=temperature, qk_scale=fsla_qk_scale)

        self.patch_embed = ConvEmbed(in_channels, embed_dims, STEM_KERNEL, STEM_STRIDE, STEM_PADDING)
        drop_paths = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        for i in range(num_stages):
            start = sum(depths[:i])
            self.stages.append(BOATCSWinStage(
                self.num_features[i - 1] if i else None, self.num_features[i], depths[i], num_heads[i],
                split_sizes[i], last_stage=i == num_stages - 1, with_fsla=with_fsla,
                drop_paths=drop_paths[start:start + depths[i]],
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate,
                fsla_cfg=fsla_cfg, with_cp=with_cp))
        self._add_output_norms()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self._check_input(x)
        x, hw_shape = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.stages):
            if stage.downsample is not None:
                x, hw_shape = stage.downsample(tokens_to_nchw(x, hw_shape))
            for block in stage.blocks:
                x = block(x, hw_shape)
            if i in self.out_indices:
                outs.append(self._output(i, x, hw_shape))
        return tuple(outs)
