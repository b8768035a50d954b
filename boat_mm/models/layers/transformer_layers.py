"""Small layers shared by both BOAT backbones (one idea each, no toolbox dependency)."""
import functools
import threading
from collections import OrderedDict, namedtuple
from typing import Callable, Iterable, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from ...utils.torch_features import is_compiling

__all__ = ['DropPath', 'Mlp', 'pad_to_multiple', 'tokens_to_nchw', 'freeze', 'NORM_LAYERS', 'parse_arch',
           'is_tracing', 'cache_outside_tracing', 'tensor_bytes', 'CacheInfo', 'build_token_norm',
           'build_activation', 'to_pair', 'adaptive_pad', 'resize_position_embedding', 'PADDING_MODES',
           'LAYER_NORM_CFG', 'GELU_CFG']

# The norm and activation of Swin, CSWin and BOAT (the toolboxes' defaults): built as torch modules directly;
# any other config goes through mmcv's builders, as the stock classes build it.
LAYER_NORM_CFG = dict(type='LN')
GELU_CFG = dict(type='GELU')
# mmcv's adaptive padding before a strided patch sampler: 'corner' pads bottom / right, 'same' both sides.
PADDING_MODES = ('corner', 'same')

# Layers that ``norm_eval`` keeps in eval mode.
NORM_LAYERS = (nn.LayerNorm, nn.GroupNorm, _BatchNorm)


def is_tracing() -> bool:
    """True under torch.compile / torch.export (dynamo) and torch.jit.trace (TorchScript ONNX export, FLOP
    counters)."""
    return is_compiling() or torch.jit.is_tracing()


def tensor_bytes(value) -> int:
    """Bytes held by the tensors in ``value`` (a tensor, or tuples / lists / NamedTuples of them)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(tensor_bytes(item) for item in value)
    return 0


CacheInfo = namedtuple('CacheInfo', ['hits', 'misses', 'maxsize', 'currsize', 'bytes', 'max_bytes'])


def cache_outside_tracing(maxsize: int, max_bytes: Optional[int] = None) -> Callable:
    """A least-recently-used cache for functions that build tensors from Python values (sizes, devices),
    bounded by entry count and by the bytes of the tensors it holds, and bypassed while tracing: tensors made
    during torch.compile / torch.export are fake, and a cache must never hand them to a later eager call (and
    a trace should record how they are built).

    The byte bound matters on a GPU under multi-scale training, where every new input size adds entries that
    live in device memory; the most recently used entry is always kept, whatever its size.

    Under torch.compile, mark the cached function ``constant_under_compile`` as well (when its result is a
    tensor, None or a plain tuple of tensors): dynamo then calls it once, for real, and the compiled code
    builds nothing."""
    def decorate(function):
        entries: 'OrderedDict[tuple, object]' = OrderedDict()
        state = dict(bytes=0, hits=0, misses=0)
        lock = threading.RLock()  # re-entrant: a cached function may call itself (plan_clusters for a device)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if is_tracing():
                return function(*args, **kwargs)
            key = (args, tuple(sorted(kwargs.items())))
            with lock:
                if key in entries:
                    entries.move_to_end(key)
                    state['hits'] += 1
                    return entries[key]
            value = function(*args, **kwargs)
            with lock:
                state['misses'] += 1
                if key not in entries:
                    entries[key] = value
                    state['bytes'] += tensor_bytes(value)
                while len(entries) > 1 and (len(entries) > maxsize
                                            or (max_bytes is not None and state['bytes'] > max_bytes)):
                    _, evicted = entries.popitem(last=False)
                    state['bytes'] -= tensor_bytes(evicted)
            return value

        def cache_info() -> CacheInfo:
            with lock:
                return CacheInfo(state['hits'], state['misses'], maxsize, len(entries), state['bytes'], max_bytes)

        def cache_clear() -> None:
            with lock:
                entries.clear()
                state.update(bytes=0, hits=0, misses=0)
        wrapper.cache_info, wrapper.cache_clear = cache_info, cache_clear
        return wrapper
    return decorate


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``drop_prob``."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'


def build_token_norm(norm_cfg: Optional[dict], dims: int) -> nn.Module:
    """A norm over the channels of (B, N, C) tokens from an OpenMMLab ``norm_cfg``: LayerNorm for
    ``dict(type='LN')`` (the default), mmcv's ``build_norm_layer`` for any other, ``nn.Identity`` for None
    (no norm, as the stock classes leave it out)."""
    if norm_cfg is None:
        return nn.Identity()
    if dict(norm_cfg) == LAYER_NORM_CFG:
        return nn.LayerNorm(dims)
    from mmcv.cnn import build_norm_layer
    return build_norm_layer(dict(norm_cfg), dims)[1]


def build_activation(act_cfg: Optional[dict]) -> nn.Module:
    """The MLP activation from an OpenMMLab ``act_cfg``: exact GELU for None or ``dict(type='GELU')``, mmcv's
    ``build_activation_layer`` for any other."""
    if act_cfg is None or dict(act_cfg) == GELU_CFG:
        return nn.GELU()
    from mmcv.cnn import build_activation_layer
    return build_activation_layer(dict(act_cfg))


def to_pair(value) -> Tuple[int, int]:
    """An int or a pair -> a pair (mmcv's ``to_2tuple`` for sizes, strides, paddings)."""
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def adaptive_pad(x: torch.Tensor, kernel: Tuple[int, int], stride: Tuple[int, int], dilation: Tuple[int, int],
                 mode: str) -> torch.Tensor:
    """Zero-pad a (B, C, H, W) map so that a (kernel, stride, dilation) sampler covers every pixel and gives
    ceil(size / stride) outputs, as mmcv's ``AdaptivePadding``: at the bottom / right ('corner') or split
    evenly, the extra one at the bottom / right ('same')."""
    pads = []
    for size, k, s, d in zip(x.shape[-2:], kernel, stride, dilation):
        pads.append(max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0))
    pad_h, pad_w = pads
    if not (pad_h or pad_w):
        return x
    if mode == 'corner':
        return F.pad(x, (0, pad_w, 0, pad_h))
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


def resize_position_embedding(pos_embed: torch.Tensor, source_grid: Sequence[int], target_grid: Sequence[int],
                              mode: str = 'bicubic') -> torch.Tensor:
    """A (1, h * w, C) position embedding over a ``source_grid`` (h, w) -> over ``target_grid``, interpolated as
    a (C, h, w) map with ``mode`` (``align_corners=False``), as mmpretrain's ``resize_pos_embed``; unchanged
    when the grids agree. Half-precision embeddings are interpolated in float32 (bicubic needs it on CPU)."""
    source_grid, target_grid = tuple(source_grid), tuple(target_grid)
    if source_grid == target_grid:
        return pos_embed
    _, length, channels = pos_embed.shape
    if length != source_grid[0] * source_grid[1]:
        raise ValueError(f'a position embedding of {length} tokens is not over a {source_grid} grid')
    grid = pos_embed.reshape(1, *source_grid, channels).permute(0, 3, 1, 2)
    compute_dtype = torch.float32 if pos_embed.dtype in (torch.float16, torch.bfloat16) else pos_embed.dtype
    resized = F.interpolate(grid.to(compute_dtype), size=target_grid, mode=mode,
                            **({} if mode in ('nearest', 'area', 'nearest-exact') else dict(align_corners=False)))
    return resized.flatten(2).transpose(1, 2).to(pos_embed.dtype)


class Mlp(nn.Module):
    """Transformer feed-forward network: fc1 -> activation (GELU unless ``act_cfg``) -> dropout -> fc2 ->
    dropout, as mmcv's ``FFN`` with ``num_fcs=2``; more layers (``num_fcs``) put hidden-to-hidden Linears with
    the same activation and dropout between fc1 and fc2, and ``layer_scale_init_value`` > 0 scales the output
    per channel by a learned ``layer_scale`` starting at that value (mmcv's ``LayerScale``)."""

    def __init__(self, embed_dims: int, hidden_dims: int, drop: float = 0.0, act_cfg: Optional[dict] = None,
                 num_fcs: int = 2, layer_scale_init_value: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.act = build_activation(act_cfg)
        self.hidden_fcs = nn.ModuleList([nn.Linear(hidden_dims, hidden_dims) for _ in range(num_fcs - 2)])
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop)
        self.layer_scale = (nn.Parameter(torch.full((embed_dims,), float(layer_scale_init_value)))
                            if layer_scale_init_value > 0 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(x)))
        for fc in self.hidden_fcs:
            x = self.drop(self.act(fc(x)))
        x = self.drop(self.fc2(x))
        return x if self.layer_scale is None else x * self.layer_scale


def pad_to_multiple(x: torch.Tensor, multiple_h: int, multiple_w: int) -> Tuple[torch.Tensor, int, int]:
    """Zero-pad a (B, H, W, C) map at the bottom/right to multiples; returns the map and the pads."""
    height, width = x.shape[1:3]
    pad_h = (-height) % multiple_h
    pad_w = (-width) % multiple_w
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return x, pad_h, pad_w


def tokens_to_nchw(x: torch.Tensor, hw_shape: Sequence[int]) -> torch.Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W) map."""
    b, _, c = x.shape
    return x.transpose(1, 2).reshape(b, c, *hw_shape).contiguous()


def freeze(module: nn.Module) -> None:
    """Eval mode and no gradient for every parameter of ``module``."""
    module.eval()
    for param in module.parameters():
        param.requires_grad = False


def parse_arch(arch, arch_zoo: dict, essential_keys: Iterable[str], class_name: str) -> dict:
    """Resolve ``arch`` (an alias string or a dict with exactly ``essential_keys``) to a settings dict."""
    essential_keys = set(essential_keys)
    if isinstance(arch, str):
        key = arch.lower()
        if key not in arch_zoo:
            raise ValueError(f'{class_name}: unknown arch {arch!r}; choose one of {sorted(arch_zoo)} '
                             f'or pass a dict with keys {sorted(essential_keys)}')
        return dict(arch_zoo[key])
    if isinstance(arch, dict):
        if set(arch) != essential_keys:
            raise ValueError(f'{class_name}: a custom arch dict needs exactly the keys '
                             f'{sorted(essential_keys)}, got {sorted(arch)}')
        return dict(arch)
    raise TypeError(f'{class_name}: arch must be a str or a dict, got {type(arch).__name__}')
