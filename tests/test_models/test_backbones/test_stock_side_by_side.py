"""BOAT-Swin with FSLA off against the toolboxes' own ``SwinTransformer`` (issue 40), side by side: built from
the same stock arguments through each toolbox's registry, both refuse or both build; built, the stock weights
(randomised) load into BOAT through the converter users take, the stage outputs agree in float64, and
``out_indices``, the frozen parameters and (mmpretrain) ``get_layer_depth`` agree."""
import pytest
import torch
from mmengine.registry import init_default_scope

from boat_mm import BOATSwinTransformer
from boat_mm.models.utils.ckpt_convert import backbone_state_dict, convert_state_dict
from boat_mm.registry import toolbox_models

TINY = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4)
TINY_PRETRAIN = dict(arch=dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)), window_size=4)
# Per toolbox: stock argument sets a config would use (defaults, and the ones BOAT refused before issue 40).
CASES = {
    'mmdet': [dict(), dict(patch_norm=False), dict(out_indices=(1, 3)), dict(frozen_stages=1)],
    'mmseg': [dict(), dict(patch_norm=False), dict(drop_path_rate=0.2)],
    'mmpretrain': [dict(), dict(out_after_downsample=True, out_indices=(0, 1, 2, 3)),
                   dict(stage_cfgs=dict(block_cfgs=dict(window_size=2))),
                   dict(stage_cfgs=[dict(window_size=2), dict(block_cfgs=[dict(window_size=8), dict()]), dict(),
                                    dict()])],
}
# Stock values both refuse (the stock asserts; BOAT names the argument).
REFUSED = {
    'mmdet': [dict(pretrain_img_size=(224, 224, 224))],
    'mmseg': [dict(pretrain_img_size=(224, 224, 224))],
    'mmpretrain': [],
}


def _build(scope, **kwargs):
    init_default_scope(scope)
    arch = TINY_PRETRAIN if scope == 'mmpretrain' else TINY
    stock = toolbox_models(scope).build(dict(type='SwinTransformer', **arch, **kwargs))
    ours = toolbox_models(scope).build(dict(type='BOATSwinTransformer', **arch, fsla_stages=(), **kwargs))
    assert type(ours) is BOATSwinTransformer and type(stock).__module__.startswith(scope)
    return stock, ours


def _randomised(module, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return module


@pytest.mark.parametrize('scope, kwargs', [(s, k) for s, cases in CASES.items() for k in cases],
                         ids=lambda v: v if isinstance(v, str) else ','.join(sorted(v)) or 'defaults')
def test_stock_and_boat_swin_give_the_same_stages(scope, kwargs):
    stock, ours = _build(scope, **kwargs)
    _randomised(stock, seed=0)
    assert ours.out_indices == tuple(stock.out_indices)
    state = {f'backbone.{k}': v for k, v in stock.state_dict().items()}
    ours.load_state_dict(backbone_state_dict(convert_state_dict(state)), strict=True)
    stock.double().eval()
    ours.double().eval()
    x = torch.randn(2, 3, 256, 256, dtype=torch.float64)  # every map a multiple of the window: no pads
    with torch.no_grad():
        expected, got = stock(x), ours(x)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    if hasattr(stock, 'get_layer_depth'):  # mmpretrain's: layer-wise lr decay gives the same lr to each weight
        for name, _ in ours.named_parameters():
            assert ours.get_layer_depth(name) == stock.get_layer_depth(name), name
    frozen = {n for n, p in stock.named_parameters() if not p.requires_grad}
    ours.train(), stock.train()
    assert len(frozen) == len([p for p in ours.parameters() if not p.requires_grad])


@pytest.mark.parametrize('scope, kwargs', [(s, k) for s, cases in REFUSED.items() for k in cases])
def test_what_the_stock_swin_refuses_boat_refuses(scope, kwargs):
    with pytest.raises(Exception):
        _build(scope, **{k: v for k, v in kwargs.items()})[0]
    init_default_scope(scope)
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        toolbox_models(scope).build(dict(type='BOATSwinTransformer', **TINY, fsla_stages=(), **kwargs))
