"""The one way boat_mm builds a model for a single process (analysis, export, drawing, inference).

A config written for a GPU cluster names ``SyncBN`` (no CPU kernel, needs a process group) and a backbone
``init_cfg`` (the ImageNet file the config was trained from). A single-process tool wants neither: SyncBN
becomes BN (the same in eval mode) and the weights come from the tool's checkpoint, if any.
"""
from typing import Optional, Tuple, Union

from mmengine.config import Config

from ..registry import TOOLBOX_SCOPES, toolbox_models

__all__ = ['TOOLBOX_SCOPES', 'replace_sync_bn', 'config_scope', 'single_process_config', 'build_model']


def replace_sync_bn(node) -> int:
    """Turn every ``type='SyncBN'`` norm config into ``BN`` in place; returns how many."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += replace_sync_bn(value)
    return count


def config_scope(cfg: Config, source: str = 'the config') -> str:
    """The toolbox a config belongs to (its ``default_scope``); a clear error for any other scope."""
    scope = cfg.get('default_scope', 'mmpretrain')
    if scope not in TOOLBOX_SCOPES:
        raise ValueError(f'default_scope {scope!r} of {source} is not one of {TOOLBOX_SCOPES}')
    return scope


def single_process_config(config: Union[str, Config]) -> Tuple[Config, str]:
    """(cfg, scope) of a config file (or a loaded config, copied) for one process: SyncBN as BN, no backbone
    ``init_cfg``, and the top-level ``data_preprocessor`` as the model's default, as mmengine's Runner does."""
    cfg = Config.fromfile(config) if isinstance(config, str) else config.copy()
    scope = config_scope(cfg, config if isinstance(config, str) else 'the config')
    if cfg.get('data_preprocessor') is not None:
        cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    replace_sync_bn(cfg.model)
    if isinstance(cfg.model.get('backbone'), dict):
        cfg.model.backbone.pop('init_cfg', None)
    return cfg, scope


def build_model(config: Union[str, Config], checkpoint: Optional[str] = None, device: str = 'cpu'):
    """(cfg, model in eval mode on ``device``) from a config: ``single_process_config``, built in the
    config's toolbox; weights from ``checkpoint`` when given, else the initialisation (random weights)."""
    from mmengine.registry import init_default_scope
    cfg, scope = single_process_config(config)
    init_default_scope(scope)
    model = toolbox_models(scope).build(cfg.model)
    if checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu', logger='silent')
    model.to(device)
    model.eval()  # (some toolbox modules' train() returns None, so no chaining)
    return cfg, model
