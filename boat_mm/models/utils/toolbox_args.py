"""The stock backbone arguments of mmdet, mmseg and mmpretrain (and of the official CSWin), so that a
config written for ``SwinTransformer`` or ``CSWin`` swaps to BOAT by changing ``type`` alone.

Each stock argument is either honoured, accepted because it changes nothing for BOAT, or refused with a
``ValueError`` that names the argument, the value given and what is supported. This module holds the
checks both backbones share; each backbone's docstring lists its own table.
"""
import math
import numbers
import warnings
from typing import Any, Mapping, Optional, Sequence

__all__ = ['resolve_arch', 'refuse_unless', 'check_norm_cfg', 'check_act_cfg', 'check_empty_cfg',
           'merge_alias', 'init_cfg_from_pretrained', 'resolve_fsla_stages', 'resolve_fsla_cfg', 'UNSET',
           'FSLA_CFG_KEYS', 'resolve_stage_windows', 'check_image_size', 'check_rate', 'check_in_channels',
           'STAGE_CFG_KEYS', 'BLOCK_CFG_KEYS']

# The norm and activation every BOAT block is built with (as in Swin and CSWin).
SUPPORTED_NORM_TYPES = ('LN', 'LayerNorm')
LAYER_NORM_EPS = 1e-5
SUPPORTED_ACT_TYPE = 'GELU'


def _as_tuple(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def refuse_unless(ok: bool, class_name: str, name: str, value: Any, supported: str) -> None:
    """Raise ``ValueError('<class>: <name>=<value> is not supported; <supported>')`` unless ``ok``."""
    if not ok:
        raise ValueError(f'{class_name}: {name}={value!r} is not supported; {supported}')


def merge_alias(class_name: str, name: str, value: Any, alias: str, alias_value: Any) -> Any:
    """One value from an argument and its alias (e.g. CSWin's ``embed_dim`` for ``embed_dims``);
    both given and different is an error. ``None`` means not given."""
    if alias_value is None:
        return value
    if value is not None and _as_tuple(value) != _as_tuple(alias_value):
        raise ValueError(f'{class_name}: {name}={value!r} and its alias {alias}={alias_value!r} disagree; give one')
    return alias_value


def resolve_arch(class_name: str, arch, explicit: Mapping[str, Any], arch_zoo: Mapping[str, dict],
                 essential_keys: Sequence[str], default_arch: str = 'tiny') -> dict:
    """The architecture settings from ``arch`` and/or explicit ``embed_dims``/``depths``/... values.

    - Only ``arch``: the zoo entry (an alias string) or a dict with exactly ``essential_keys``.
    - Only explicit values (the mmdet/mmseg way): those, the rest from ``default_arch`` (the stock
      signatures default to the tiny model).
    - Both: every explicit value must equal the arch's, else ``ValueError`` naming the disagreement.
    """
    from ..layers.transformer_layers import parse_arch
    given = {k: _as_tuple(v) for k, v in explicit.items() if v is not None}
    if arch is None:
        settings = parse_arch(default_arch, arch_zoo, essential_keys, class_name)
        settings.update(given)
        return settings
    settings = parse_arch(arch, arch_zoo, essential_keys, class_name)
    for key, value in given.items():
        if _as_tuple(settings[key]) != value:
            raise ValueError(f'{class_name}: arch={arch!r} has {key}={_as_tuple(settings[key])}, but {key}={value} '
                             f'was also given; give the architecture once (arch, or {"/".join(essential_keys)})')
    return settings


def check_norm_cfg(class_name: str, norm_cfg: Optional[Mapping]) -> None:
    """Only LayerNorm (eps 1e-5, trainable), which every BOAT norm is."""
    if norm_cfg is None:
        return
    cfg = dict(norm_cfg)
    ok = (cfg.pop('type', None) in SUPPORTED_NORM_TYPES and cfg.pop('requires_grad', True) is True
          and cfg.pop('eps', LAYER_NORM_EPS) == LAYER_NORM_EPS and not cfg)
    refuse_unless(ok, class_name, 'norm_cfg', norm_cfg,
                  f"only dict(type='LN') (LayerNorm, eps {LAYER_NORM_EPS}, requires_grad=True) is supported")


def check_act_cfg(class_name: str, act_cfg: Optional[Mapping]) -> None:
    """Only GELU (exact), the MLP activation of Swin, CSWin and BOAT."""
    if act_cfg is None:
        return
    refuse_unless(dict(act_cfg) == dict(type=SUPPORTED_ACT_TYPE), class_name, 'act_cfg', act_cfg,
                  f"only dict(type='{SUPPORTED_ACT_TYPE}') is supported")


def check_empty_cfg(class_name: str, name: str, value: Any) -> None:
    """mmpretrain's per-stage / patch-embedding override dicts: nothing to override in BOAT."""
    refuse_unless(not value, class_name, name, value,
                  'BOAT blocks and the patch embedding take no overrides: leave it empty and use the '
                  'backbone arguments instead')


def init_cfg_from_pretrained(class_name: str, pretrained: Optional[str], init_cfg):
    """The toolboxes' deprecated ``pretrained=PATH``: an alias of ``init_cfg=dict(type='Pretrained', ...)``."""
    if pretrained is None:
        return init_cfg
    if init_cfg is not None:
        raise ValueError(f'{class_name}: init_cfg and pretrained cannot be set at the same time')
    if not isinstance(pretrained, str):
        raise TypeError(f'{class_name}: pretrained must be a checkpoint path (str) or None, got '
                        f'{type(pretrained).__name__}')
    warnings.warn('DeprecationWarning: pretrained is deprecated, please use "init_cfg" instead', stacklevel=3)
    return dict(type='Pretrained', checkpoint=pretrained)


def resolve_fsla_stages(class_name: str, fsla_stages: Optional[Sequence[int]], num_stages: int,
                        default: Sequence[int], with_fsla: Optional[bool] = None) -> tuple:
    """The stages that carry FSLA (None: ``default``, the released placement); ``with_fsla`` is the
    deprecated CSWin spelling (False: none)."""
    if fsla_stages is None:
        fsla_stages = default
    if with_fsla is not None:
        warnings.warn(f'{class_name}: with_fsla is deprecated; use fsla_stages=() for no FSLA '
                      f'(the plain network) or list the stages', DeprecationWarning, stacklevel=3)
        if not with_fsla:
            fsla_stages = ()
    fsla_stages = tuple(fsla_stages)
    if any(not isinstance(i, int) or not 0 <= i < num_stages for i in fsla_stages):
        raise ValueError(f'fsla_stages must be stage indices in [0, {num_stages}), got {fsla_stages}')
    return fsla_stages



# The keys of ``fsla_cfg`` (FeatureSpaceLocalAttention's settings), and the flat backbone arguments that
# spelled them before (deprecated aliases).
FSLA_CFG_KEYS = ('cluster_size', 'overlap', 'kmeans_iters', 'temperature', 'qk_scale')
_LEGACY_FSLA_ARGUMENTS = {'cluster_size': 'cluster_size', 'overlap': 'overlap', 'kmeans_iters': 'kmeans_iters',
                          'temperature': 'temperature', 'fsla_qk_scale': 'qk_scale'}
UNSET = object()  # "argument not given" where None is a meaningful value (fsla_qk_scale=None: head_dim ** -0.5)
_warned = set()


def _warn_once(key, message: str) -> None:
    """A deprecation warning per (class, argument) and process, not one per block or per build."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, DeprecationWarning, stacklevel=4)


def resolve_fsla_cfg(class_name: str, fsla_cfg: Optional[Mapping[str, Any]], defaults: Mapping[str, Any],
                     **legacy: Any) -> dict:
    """The FSLA settings: ``defaults`` (the released values) updated by ``fsla_cfg`` and by the deprecated
    flat arguments (``cluster_size=``, ..., ``fsla_qk_scale=``; ``UNSET`` when not given), which warn once."""
    given = dict(fsla_cfg or {})
    unknown = sorted(set(given) - set(FSLA_CFG_KEYS))
    if unknown:
        raise ValueError(f'{class_name}: fsla_cfg has unknown keys {unknown}; known: {list(FSLA_CFG_KEYS)}')
    for old, value in legacy.items():
        if value is UNSET:
            continue
        new = _LEGACY_FSLA_ARGUMENTS[old]
        _warn_once((class_name, old), f'{class_name}: {old}= is deprecated; use fsla_cfg=dict({new}=...)')
        if new in given and given[new] != value:
            raise ValueError(f'{class_name}: {old}={value!r} contradicts fsla_cfg {new}={given[new]!r}')
        given[new] = value
    return {**defaults, **given}


def check_image_size(class_name: str, name: str, value: Any) -> None:
    """``pretrain_img_size`` / ``img_size``: an int or a sequence of length 1 or 2, as the stock Swin asserts
    ("The size of image should have length 1 or 2"); None: not given."""
    if value is None:
        return
    if isinstance(value, (list, tuple)):
        ok = len(value) in (1, 2) and all(isinstance(v, int) and v >= 1 for v in value)
    else:
        ok = isinstance(value, int) and value >= 1
    refuse_unless(ok, class_name, name, value, 'the size of image should be an int or have length 1 or 2')


def check_rate(class_name: str, name: str, value: Any) -> None:
    """A dropout or stochastic-depth rate: a finite number in [0, 1)."""
    ok = isinstance(value, numbers.Real) and math.isfinite(value) and 0 <= value < 1
    refuse_unless(ok, class_name, name, value, 'a rate in [0, 1) is expected')


def check_in_channels(class_name: str, value: Any) -> None:
    refuse_unless(isinstance(value, int) and value >= 1, class_name, 'in_channels', value,
                  'images need at least one channel (an int >= 1)')


# The keys of mmpretrain's ``stage_cfgs`` (per stage) and of their ``block_cfgs`` (per block) that BOAT-Swin
# honours: the window of each block (mmpretrain's 384-pixel configs set ``block_cfgs=dict(window_size=12)``).
STAGE_CFG_KEYS = ('window_size', 'block_cfgs')
BLOCK_CFG_KEYS = ('window_size',)


def _per_item(class_name: str, name: str, value, count: int) -> list:
    """mmpretrain's convention: one dict for every item, or a sequence of one dict per item."""
    if value is None:
        return [{} for _ in range(count)]
    if isinstance(value, Mapping):
        return [dict(value) for _ in range(count)]
    items = list(value)
    refuse_unless(len(items) == count and all(isinstance(item, Mapping) for item in items), class_name, name,
                  value, f'one dict for all, or a sequence of {count} dicts (one each)')
    return [dict(item) for item in items]


def resolve_stage_windows(class_name: str, stage_cfgs, window_size: int, depths: Sequence[int]) -> list:
    """The Swin window of every block, per stage, from ``window_size`` and mmpretrain's ``stage_cfgs``:
    a dict for every stage or a sequence of one per stage, each with an optional ``window_size`` and
    ``block_cfgs`` (a dict for every block of the stage or one per block, each with an optional
    ``window_size``), later settings overriding earlier ones as in mmpretrain's ``SwinTransformer``. Other keys
    (mmpretrain's block internals: ffn_cfgs, norm_cfg, ...) are refused, naming them."""
    windows = []
    for stage, stage_cfg in enumerate(_per_item(class_name, 'stage_cfgs', stage_cfgs, len(depths))):
        unknown = sorted(set(stage_cfg) - set(STAGE_CFG_KEYS))
        refuse_unless(not unknown, class_name, 'stage_cfgs', stage_cfgs,
                      f'stage {stage} sets {unknown}; BOAT-Swin honours {list(STAGE_CFG_KEYS)} there')
        stage_window = stage_cfg.get('window_size', window_size)
        block_cfgs = _per_item(class_name, f'stage_cfgs[{stage}].block_cfgs', stage_cfg.get('block_cfgs'),
                               depths[stage])
        stage_windows = []
        for block, block_cfg in enumerate(block_cfgs):
            unknown = sorted(set(block_cfg) - set(BLOCK_CFG_KEYS))
            refuse_unless(not unknown, class_name, 'stage_cfgs', stage_cfgs,
                          f'block {block} of stage {stage} sets {unknown}; BOAT-Swin honours '
                          f'{list(BLOCK_CFG_KEYS)} there')
            window = block_cfg.get('window_size', stage_window)
            refuse_unless(isinstance(window, int) and window >= 1, class_name, 'window_size', window,
                          'a positive int (released: 7)')
            stage_windows.append(window)
        windows.append(stage_windows)
    return windows
