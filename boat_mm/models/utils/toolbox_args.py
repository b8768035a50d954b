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

__all__ = ['resolve_arch', 'refuse_unless', 'merge_alias', 'init_cfg_from_pretrained', 'resolve_fsla_stages',
           'resolve_fsla_cfg', 'UNSET', 'FSLA_CFG_KEYS', 'check_image_size', 'image_size_pair', 'check_rate',
           'check_in_channels',
           'building_scope', 'builds_like_mmpretrain', 'per_item', 'check_keys', 'check_overrides',
           'resolve_swin_stages', 'check_window_size', 'check_norm_cfg', 'check_act_cfg', 'check_empty_cfg',
           'STAGE_CFG_KEYS', 'BLOCK_CFG_KEYS', 'ATTN_CFG_KEYS', 'FFN_CFG_KEYS',
           'PATCH_CFG_KEYS', 'PATCH_CFG_SETTINGS', 'PATCH_CFG_RENAMES', 'PATCH_CONV_TYPES', 'DOWNSAMPLE_CFG_KEYS']

# Toolboxes whose Swin gives some arguments another meaning than mmdet's and mmseg's (``builds_like_mmpretrain``).
MMPRETRAIN_SCOPES = ('mmpretrain',)


def building_scope() -> Optional[str]:
    """The OpenMMLab default scope the backbone is being built under (None outside any toolbox)."""
    from mmengine.registry import DefaultScope
    scope = DefaultScope.get_current_instance()
    return None if scope is None else scope.scope_name


def builds_like_mmpretrain() -> bool:
    """Whether the stock arguments take mmpretrain's meaning (its Swin's), not mmdet's / mmseg's: asked at
    construction, since a scope is current only while a registry builds."""
    return building_scope() in MMPRETRAIN_SCOPES


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


def check_norm_cfg(class_name: str, norm_cfg: Optional[Mapping], name: str = 'norm_cfg') -> None:
    """A norm config as mmcv builds it: None (no norm) or a dict with a ``type``."""
    refuse_unless(norm_cfg is None or (isinstance(norm_cfg, Mapping) and 'type' in norm_cfg), class_name, name,
                  norm_cfg, "a dict with a 'type' (e.g. dict(type='LN')) or None")


def check_act_cfg(class_name: str, act_cfg: Optional[Mapping], name: str = 'act_cfg') -> None:
    """An activation config as mmcv builds it: a dict with a ``type`` (None: the default GELU)."""
    refuse_unless(act_cfg is None or (isinstance(act_cfg, Mapping) and 'type' in act_cfg), class_name, name,
                  act_cfg, "a dict with a 'type' (e.g. dict(type='GELU'))")


def check_empty_cfg(class_name: str, name: str, value: Any) -> None:
    """An override dict a backbone takes no overrides from: it must be empty (kept for the pre-issue-40 API;
    BOAT-Swin honours ``patch_cfg`` and ``stage_cfgs`` now)."""
    refuse_unless(not value, class_name, name, value, 'leave it empty and use the backbone arguments instead')


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


def image_size_pair(value) -> tuple:
    """An image size as the stock Swins take it (an int, or a sequence of 1 or 2) -> (height, width)."""
    if isinstance(value, (list, tuple)):
        return tuple(value) * 2 if len(value) == 1 else tuple(value)
    return (value, value)


def check_rate(class_name: str, name: str, value: Any) -> None:
    """A dropout or stochastic-depth rate: a finite number in [0, 1)."""
    ok = isinstance(value, numbers.Real) and math.isfinite(value) and 0 <= value < 1
    refuse_unless(ok, class_name, name, value, 'a rate in [0, 1) is expected')


def check_in_channels(class_name: str, value: Any) -> None:
    refuse_unless(isinstance(value, int) and value >= 1, class_name, 'in_channels', value,
                  'images need at least one channel (an int >= 1)')


def per_item(class_name: str, name: str, value, count: int) -> list:
    """mmpretrain's convention for per-stage / per-block settings: one dict for every item, or a sequence of
    one dict per item (None: empty dicts)."""
    if value is None:
        return [{} for _ in range(count)]
    if isinstance(value, Mapping):
        return [dict(value) for _ in range(count)]
    items = list(value)
    refuse_unless(len(items) == count and all(isinstance(item, Mapping) for item in items), class_name, name,
                  value, f'one dict for all, or a sequence of {count} dicts (one each)')
    return [dict(item) for item in items]


def check_keys(class_name: str, name: str, value: Mapping, honoured: Sequence[str]) -> None:
    """Refuse keys of a stock override dict (``stage_cfgs``, ``patch_cfg``, ...) outside ``honoured``, naming
    them: the ones a stock class takes but that would rebuild what BOAT fixes (the stage widths, the module
    types)."""
    unknown = sorted(set(value) - set(honoured))
    refuse_unless(not unknown, class_name, name, dict(value), f'it sets {unknown}; honoured there: {list(honoured)}')


def check_overrides(class_name: str, name: str, value: Mapping, fixed: Mapping[str, Any]) -> None:
    """Keys of a stock override dict that may only repeat what the backbone already has (e.g. ``patch_cfg``'s
    ``in_channels``): another value is refused, naming it."""
    for key, expected in fixed.items():
        if key in value:
            refuse_unless(_as_tuple(value[key]) == _as_tuple(expected), class_name, f'{name}[{key!r}]', value[key],
                          f'it must equal the backbone\'s {expected!r}')


# mmpretrain's ``stage_cfgs`` (per stage, its ``SwinBlockSequence``'s arguments) and their ``block_cfgs`` (per
# block, its ``SwinBlock``'s), with the keys BOAT-Swin honours at each level; ``embed_dims`` and ``depth`` may
# only repeat the architecture's (the stock class fails on another value), the rest is refused, naming it.
STAGE_CFG_KEYS = ('window_size', 'block_cfgs', 'downsample_cfg', 'drop_paths', 'with_cp', 'pad_small_map',
                  'num_heads', 'downsample', 'embed_dims', 'depth', 'init_cfg')
BLOCK_CFG_KEYS = ('window_size', 'shift', 'ffn_ratio', 'drop_path', 'pad_small_map', 'norm_cfg', 'with_cp',
                  'attn_cfgs', 'ffn_cfgs', 'num_heads', 'embed_dims', 'init_cfg')
# ``attn_cfgs`` (its ``ShiftWindowMSA``'s and ``WindowMSA``'s arguments) and ``ffn_cfgs`` (mmcv ``FFN``'s),
# mapped to BOATSwinBlock's; their ``embed_dims`` may only repeat the block's, ``num_fcs`` only 2.
ATTN_CFG_KEYS = {'qkv_bias': 'qkv_bias', 'qk_scale': 'qk_scale', 'attn_drop': 'attn_drop', 'proj_drop': 'proj_drop',
                 'window_size': 'attention_window_size', 'shift_size': 'shift_size',
                 'pad_small_map': 'pad_small_map', 'dropout_layer': 'attention_dropout_layer',
                 'embed_dims': 'embed_dims', 'num_heads': 'num_heads', 'init_cfg': 'attention_init_cfg',
                 'window_msa': 'window_msa', 'cpb_mlp_hidden_dims': 'cpb_mlp_hidden_dims',
                 'pretrained_window_size': 'pretrained_window_size'}
# The window attentions mmpretrain's ``attn_cfgs`` ``window_msa`` may name (a class or its name): Swin's
# (``WindowMSA``, the default) and Swin-V2's (``WindowMSAV2``: cosine attention, continuous position bias).
WINDOW_MSA_TYPES = ('WindowMSA', 'WindowMSAV2')
# The settings only Swin-V2's attention takes, and the one only Swin's takes (mmpretrain's signatures).
COSINE_ATTENTION_KEYS = ('cpb_mlp_hidden_dims', 'pretrained_window_size')
FFN_CFG_KEYS = {'feedforward_channels': 'mlp_hidden_dims', 'ffn_drop': 'ffn_drop', 'act_cfg': 'act_cfg',
                'dropout_layer': 'mlp_dropout_layer', 'add_identity': 'mlp_residual', 'embed_dims': 'embed_dims',
                'num_fcs': 'mlp_num_fcs', 'layer_scale_init_value': 'mlp_layer_scale', 'init_cfg': 'mlp_init_cfg'}
MIN_FFN_NUM_FCS = 2  # fc1 and fc2, as mmcv's FFN asserts
BLOCK_CFG_RENAMES = {'ffn_ratio': 'mlp_ratio'}
# mmcv's dropout layers a branch of a block may end with (``dropout_layer``).
DROPOUT_LAYER_TYPES = ('DropPath', 'Dropout')
# The stage settings every block of the stage inherits unless its own block_cfgs says otherwise.
STAGE_SETTINGS_FOR_BLOCKS = ('window_size', 'with_cp', 'pad_small_map', 'num_heads')


def check_window_size(class_name: str, window_size: Any) -> None:
    """A Swin window: a positive int."""
    refuse_unless(isinstance(window_size, int) and window_size >= 1, class_name, 'window_size', window_size,
                  'a positive int (released: 7)')


def _check_dropout_layer(class_name: str, name: str, cfg) -> None:
    refuse_unless(cfg is None or (isinstance(cfg, Mapping) and cfg.get('type') in DROPOUT_LAYER_TYPES),
                  class_name, name, cfg, f"None or a dict with type in {DROPOUT_LAYER_TYPES} and a drop_prob")
    if cfg is not None:
        check_rate(class_name, f'{name} drop_prob', cfg.get('drop_prob', 0.0))


def _finish_block(class_name: str, where: str, block: dict) -> dict:
    """A block's settings once every level has spoken: the attention window and shift as mmpretrain's
    ``SwinBlock`` derives them (the shift from the block's window, the window from ``attn_cfgs`` if set)."""
    num_fcs = block.get('mlp_num_fcs', MIN_FFN_NUM_FCS)
    refuse_unless(isinstance(num_fcs, int) and num_fcs >= MIN_FFN_NUM_FCS, class_name, f'{where}.ffn_cfgs num_fcs',
                  num_fcs, f'an int >= {MIN_FFN_NUM_FCS}, as mmcv\'s FFN asserts')
    window_msa = getattr(block.get('window_msa'), '__name__', block.get('window_msa', WINDOW_MSA_TYPES[0]))
    refuse_unless(window_msa in WINDOW_MSA_TYPES, class_name, f'{where}.attn_cfgs window_msa', window_msa,
                  f'one of {WINDOW_MSA_TYPES} (or the class)')
    block['window_msa'] = window_msa
    cosine = window_msa == WINDOW_MSA_TYPES[1]
    for key in COSINE_ATTENTION_KEYS:  # Swin's WindowMSA does not take them (a TypeError there)
        refuse_unless(cosine or key not in block, class_name, f'{where}.attn_cfgs {key}', block.get(key),
                      f'only with window_msa={WINDOW_MSA_TYPES[1]!r}')
    block['cosine_attention_cfg'] = {key: block.pop(key) for key in COSINE_ATTENTION_KEYS if key in block}
    # WindowMSAV2 takes no qk_scale (a TypeError there): only the backbone's default, None, goes with it
    refuse_unless(not cosine or block.get('qk_scale') is None, class_name, f'{where} qk_scale', block.get('qk_scale'),
                  f'None with window_msa={WINDOW_MSA_TYPES[1]!r}: its attention is cosine, scaled by a learned '
                  f'logit_scale')
    window = block['window_size']
    check_window_size(class_name, window)
    shift = block.pop('shift')
    block['window_size'] = block.pop('attention_window_size', window)
    check_window_size(class_name, block['window_size'])
    block['shift_size'] = block.pop('shift_size', window // 2 if shift else 0)
    refuse_unless(isinstance(block['shift_size'], int) and 0 <= block['shift_size'] < block['window_size'],
                  class_name, f'{where} shift_size', block['shift_size'],
                  f'0 <= shift_size < window_size={block["window_size"]}')
    check_rate(class_name, f'{where} drop_path', block['drop_path'])
    for key in ('attention_dropout_layer', 'mlp_dropout_layer'):
        _check_dropout_layer(class_name, f'{where} {key}', block.get(key))
    return block


def resolve_swin_stages(class_name: str, stage_cfgs, depths: Sequence[int], num_heads: Sequence[int],
                        embed_dims: int, stage_defaults: Mapping[str, Any], block_defaults: Mapping[str, Any],
                        drop_paths: Sequence[Sequence[float]]) -> list:
    """Every stage's and block's settings from the backbone's arguments and mmpretrain's ``stage_cfgs``.

    ``stage_defaults`` (window_size, with_cp, pad_small_map) and ``block_defaults`` (BOATSwinBlock's other
    arguments) come from the backbone's own arguments; ``stage_cfgs`` (a dict for every stage or one per stage)
    overrides them per stage, its ``block_cfgs`` (a dict for every block of the stage or one per block) per
    block, and their ``attn_cfgs`` / ``ffn_cfgs`` last, as mmpretrain's ``SwinTransformer`` merges them. Blocks
    alternate ``shift`` from False, as there. The widths flow as there: a stage's merging (``downsample``, by
    default on all but the last stage) gives the next stage ``downsample_cfg``'s ``out_channels`` (default twice
    the stage's). Returns per stage a dict: ``dims``, ``out_dims``, ``blocks`` (BOATSwinBlock arguments each)
    and ``downsample_cfg`` (None: no merging), and the stage's ``init_cfg``."""
    stages = []
    dims = embed_dims
    for stage, stage_cfg in enumerate(per_item(class_name, 'stage_cfgs', stage_cfgs, len(depths))):
        where = f'stage_cfgs[{stage}]'
        check_keys(class_name, where, stage_cfg, STAGE_CFG_KEYS)
        check_overrides(class_name, where, stage_cfg, dict(embed_dims=dims, depth=depths[stage]))
        settings = {**stage_defaults, 'num_heads': num_heads[stage],
                    **{k: stage_cfg[k] for k in STAGE_SETTINGS_FOR_BLOCKS if k in stage_cfg}}
        stage_drop_paths = stage_cfg.get('drop_paths', drop_paths[stage])
        if not isinstance(stage_drop_paths, Sequence):
            stage_drop_paths = [stage_drop_paths] * depths[stage]
        blocks = []
        for index, block_cfg in enumerate(per_item(class_name, f'{where}.block_cfgs', stage_cfg.get('block_cfgs'),
                                                   depths[stage])):
            block_where = f'{where}.block_cfgs[{index}]'
            check_keys(class_name, block_where, block_cfg, BLOCK_CFG_KEYS)
            check_overrides(class_name, block_where, block_cfg, dict(embed_dims=dims))
            block_cfg.pop('embed_dims', None)
            block = {**block_defaults, **settings, 'shift': index % 2 == 1, 'drop_path': stage_drop_paths[index]}
            nested = {name: dict(block_cfg.pop(name, None) or {}) for name in ('attn_cfgs', 'ffn_cfgs')}
            block.update({BLOCK_CFG_RENAMES.get(k, k): v for k, v in block_cfg.items()})
            for name, mapping in (('attn_cfgs', ATTN_CFG_KEYS), ('ffn_cfgs', FFN_CFG_KEYS)):
                check_keys(class_name, f'{block_where}.{name}', nested[name], tuple(mapping))
                check_overrides(class_name, f'{block_where}.{name}', nested[name], dict(embed_dims=dims))
                block.update({mapping[k]: v for k, v in nested[name].items() if k != 'embed_dims'})
            blocks.append(_finish_block(class_name, block_where, block))
        downsample = stage_cfg.get('downsample', stage < len(depths) - 1)
        downsample_cfg = dict(stage_cfg.get('downsample_cfg') or {}) if downsample else None
        out_dims = dims
        if downsample:
            check_overrides(class_name, f'{where}.downsample_cfg', downsample_cfg, dict(in_channels=dims))
            out_dims = downsample_cfg.pop('out_channels', 2 * dims)
            refuse_unless(isinstance(out_dims, int) and out_dims >= 1, class_name,
                          f'{where}.downsample_cfg out_channels', out_dims, 'a positive int')
            downsample_cfg.pop('in_channels', None)
        stages.append(dict(dims=dims, out_dims=out_dims, blocks=blocks, downsample_cfg=downsample_cfg,
                           init_cfg=stage_cfg.get('init_cfg')))
        dims = out_dims
    return stages


# mmpretrain's ``patch_cfg`` (mmcv ``PatchEmbed``'s arguments) and ``downsample_cfg`` (``PatchMerging``'s): the
# sampler settings are honoured; the channels and the convolution type may only repeat the backbone's.
PATCH_CFG_SETTINGS = ('kernel_size', 'stride', 'padding', 'dilation', 'bias', 'norm_cfg', 'init_cfg')
PATCH_CFG_RENAMES = {'kernel_size': 'patch_size'}
PATCH_CONV_TYPES = ('Conv2d', 'Conv')  # mmcv's names of nn.Conv2d
PATCH_CFG_KEYS = PATCH_CFG_SETTINGS + ('input_size', 'in_channels', 'embed_dims', 'conv_type')
DOWNSAMPLE_CFG_KEYS = ('kernel_size', 'stride', 'padding', 'dilation', 'bias', 'norm_cfg', 'init_cfg')
