"""BOAT-Swin with FSLA off against the toolboxes' own ``SwinTransformer`` (issue 40), side by side: built from
the same stock arguments through each toolbox's registry, both refuse or both build; built, the stock weights
(randomised) load into BOAT through the converter users take, the stage outputs agree in float64, and
``out_indices``, the frozen parameters and (mmpretrain) ``get_layer_depth`` agree."""
import pytest
import torch
from mmengine.registry import init_default_scope
from mmpretrain.models.utils import WindowMSAV2

from boat_mm import BOATSwinTransformer
from boat_mm.models.utils.ckpt_convert import backbone_state_dict, convert_state_dict
from boat_mm.registry import toolbox_models

TINY = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4)
TINY_PRETRAIN = dict(arch=dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)), window_size=4)
# Input sizes: every map a multiple of the window (no pads), and one where every stage pads and the last map
# (4x3) is smaller than the window.
SQUARE, PADDED = (256, 256), (120, 88)
LN_EPS = dict(type='LN', eps=1e-6)
# Per toolbox: stock argument sets a config would use (defaults, and the ones BOAT refused before issue 40),
# each with the input size it runs at (mmdet's / mmseg's absolute position embedding only at its pretraining
# size).
CASES = {
    'mmdet': [(dict(), SQUARE), (dict(), PADDED), (dict(patch_norm=False), SQUARE),
              (dict(out_indices=(1, 3)), SQUARE), (dict(frozen_stages=1), SQUARE),
              (dict(use_abs_pos_embed=True, pretrain_img_size=256, frozen_stages=0), SQUARE),
              (dict(strides=(4, 2, 2, 2)), PADDED), (dict(strides=(4, 1, 2, 2)), PADDED),
              (dict(strides=(4, 3, 2, 2)), SQUARE),
              (dict(act_cfg=dict(type='ReLU'), norm_cfg=LN_EPS), PADDED)],
    'mmseg': [(dict(), SQUARE), (dict(), PADDED), (dict(patch_norm=False), PADDED),
              (dict(drop_path_rate=0.2), SQUARE),
              (dict(use_abs_pos_embed=True, pretrain_img_size=(120, 88), frozen_stages=2), PADDED),
              (dict(use_abs_pos_embed=True, pretrain_img_size=(256,)), SQUARE),
              (dict(act_cfg=dict(type='GELU', approximate='tanh'), norm_cfg=LN_EPS, qkv_bias=False,
                    mlp_ratio=2), SQUARE)],
    'mmpretrain': [(dict(), SQUARE), (dict(out_after_downsample=True, out_indices=(0, 1, 2, 3)), SQUARE),
                   (dict(stage_cfgs=dict(block_cfgs=dict(window_size=2))), SQUARE),
                   (dict(stage_cfgs=[dict(window_size=2), dict(block_cfgs=[dict(window_size=8), dict()]), dict(),
                                     dict()]), SQUARE),
                   (dict(use_abs_pos_embed=True, img_size=256, frozen_stages=0), SQUARE),
                   (dict(norm_cfg=None, out_indices=(2, 3)), SQUARE),
                   (dict(pad_small_map=True), PADDED), (dict(pad_small_map=True, window_size=8), SQUARE),
                   (dict(patch_cfg=dict(norm_cfg=None, kernel_size=5, padding='same', stride=4), pad_small_map=True),
                    PADDED),
                   (dict(patch_cfg=dict(norm_cfg=LN_EPS, input_size=128), use_abs_pos_embed=True,
                         interpolate_mode='bilinear'), (128, 128)),
                   (dict(stage_cfgs=dict(downsample_cfg=dict(kernel_size=3, stride=2, norm_cfg=None, bias=True),
                                         with_cp=True),
                         pad_small_map=True), PADDED),
                   (dict(stage_cfgs=[dict(block_cfgs=dict(ffn_ratio=2, norm_cfg=LN_EPS,
                                                          attn_cfgs=dict(qkv_bias=False, qk_scale=0.5),
                                                          ffn_cfgs=dict(act_cfg=dict(type='ReLU')))),
                                     dict(block_cfgs=[dict(shift=True), dict(shift=False)]),
                                     dict(drop_paths=0.3, pad_small_map=True), dict()]), SQUARE),
                   (dict(stage_cfgs=[dict(num_heads=2, downsample_cfg=dict(out_channels=24)),
                                     dict(block_cfgs=[dict(num_heads=1), dict(num_heads=4)], downsample=False),
                                     dict(block_cfgs=dict(attn_cfgs=dict(window_size=2, shift_size=1),
                                                          ffn_cfgs=dict(add_identity=False))),
                                     dict(downsample=True)],
                         out_after_downsample=True, out_indices=(0, 1, 2, 3)), SQUARE),
                   (dict(stage_cfgs=dict(block_cfgs=dict(
                       attn_cfgs=dict(dropout_layer=dict(type='DropPath', drop_prob=0.2)),
                       ffn_cfgs=dict(dropout_layer=dict(type='Dropout', drop_prob=0.1), num_fcs=3,
                                     layer_scale_init_value=0.5))),
                       arch=dict(embed_dims=16, depths=(2, 2), num_heads=(1, 2)), out_indices=(0, 1)), PADDED),
                   (dict(stage_cfgs=dict(block_cfgs=dict(attn_cfgs=dict(
                       window_msa=WindowMSAV2, cpb_mlp_hidden_dims=32, pretrained_window_size=(3, 3)))),
                       pad_small_map=True), PADDED)],
}
# Stock values both refuse (the stock asserts; BOAT names the argument).
REFUSED = {
    'mmdet': [dict(pretrain_img_size=(224, 224, 224)), dict(strides=(2, 2, 2, 2))],
    'mmseg': [dict(pretrain_img_size=(224, 224, 224)), dict(strides=(8, 2, 2, 2))],
    'mmpretrain': [dict(patch_cfg=dict(padding='middle')),
                   dict(stage_cfgs=dict(downsample_cfg=dict(use_post_norm=True))),
                   dict(stage_cfgs=dict(block_cfgs=dict(attn_cfgs=dict(cpb_mlp_hidden_dims=32))))],
}


def _build(scope, **kwargs):
    init_default_scope(scope)
    arch = TINY_PRETRAIN if scope == 'mmpretrain' else TINY
    stock = toolbox_models(scope).build(dict(type='SwinTransformer', **{**arch, **kwargs}))
    ours = toolbox_models(scope).build(dict(type='BOATSwinTransformer', **{**arch, **kwargs}, fsla_stages=()))
    assert type(ours) is BOATSwinTransformer and type(stock).__module__.startswith(scope)
    return stock, ours


def _randomised(module, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return module


@pytest.mark.parametrize('scope, kwargs, size', [(s, k, size) for s, cases in CASES.items() for k, size in cases],
                         ids=lambda v: v if isinstance(v, str) else 'x'.join(map(str, v)) if isinstance(v, tuple)
                         else ','.join(sorted(v)) or 'defaults')
def test_stock_and_boat_swin_give_the_same_stages(scope, kwargs, size):
    stock, ours = _build(scope, **kwargs)
    _randomised(stock, seed=0)
    assert ours.out_indices == tuple(stock.out_indices)
    state = {f'backbone.{k}': v for k, v in stock.state_dict().items()}
    ours.load_state_dict(backbone_state_dict(convert_state_dict(state)), strict=True)
    stock.double().eval()
    ours.double().eval()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
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


def _loaded_pair(scope, **kwargs):
    stock, ours = _build(scope, **kwargs)
    _randomised(stock, seed=1)
    state = {f'backbone.{k}': v for k, v in stock.state_dict().items()}
    ours.load_state_dict(backbone_state_dict(convert_state_dict(state)), strict=True)
    for model in (stock, ours):  # the stock train() returns None: no chaining
        model.double()
        model.eval()
    return stock, ours


def test_position_embedding_is_resized_as_mmpretrain_resizes_it():
    """At an input other than ``img_size`` the embedding is interpolated with ``interpolate_mode``; mmpretrain
    interpolates in float32, so float64 agreement is to float32's resolution."""
    stock, ours = _loaded_pair('mmpretrain', use_abs_pos_embed=True, img_size=128, interpolate_mode='bicubic')
    x = torch.randn(1, 3, 160, 128, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], stock(x)[0], rtol=1e-5, atol=1e-5)


def test_position_embedding_of_a_stock_checkpoint_is_resized_on_load(tmp_path):
    """A stock mmpretrain checkpoint whose embedding is over another grid (pretrained at 128, fine-tuned at 256)
    loads through ``init_cfg`` resized as mmpretrain's own load hook resizes it."""
    source, _ = _build('mmpretrain', use_abs_pos_embed=True, img_size=128)
    _randomised(source, seed=2)
    path = tmp_path / 'swin_128.pth'
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in source.state_dict().items()}), path)
    stock, ours = _build('mmpretrain', use_abs_pos_embed=True, img_size=256)
    stock.load_state_dict(source.state_dict())
    ours.init_cfg = dict(type='Pretrained', checkpoint=str(path), prefix='backbone.')
    ours.init_weights()
    assert ours.absolute_pos_embed.shape == stock.absolute_pos_embed.shape == (1, 64 * 64, 16)
    torch.testing.assert_close(ours.absolute_pos_embed, stock.absolute_pos_embed, rtol=1e-6, atol=1e-6)


def test_mmdet_position_embedding_at_another_size_is_resized_where_the_stock_fails():
    """mmdet's / mmseg's Swin add the embedding as it is, so any other input size fails there; BOAT resizes it
    (bicubic, mmpretrain's way) and equals the stock at the pretraining size."""
    stock, ours = _loaded_pair('mmdet', use_abs_pos_embed=True, pretrain_img_size=128)
    x = torch.randn(1, 3, 160, 96, dtype=torch.float64)
    with pytest.raises(RuntimeError):
        stock(x)
    with torch.no_grad():
        assert [o.shape[-2:] for o in ours(x)] == [(40, 24), (20, 12), (10, 6), (5, 3)]


def test_maps_smaller_than_the_window_run_where_mmpretrain_refuses():
    """mmpretrain's ``pad_small_map=False`` refuses a map smaller than the window at the forward; BOAT pads it
    and does not shift it (a map exactly one window is not shifted in both)."""
    stock, ours = _loaded_pair('mmpretrain')
    x = torch.randn(1, 3, 96, 96, dtype=torch.float64)  # last map 3x3 < window 4
    with pytest.raises(AssertionError, match='pad_small_map'):
        stock(x)
    with torch.no_grad():
        assert ours(x)[0].shape == (1, 128, 3, 3)
    x = torch.randn(1, 3, 128, 128, dtype=torch.float64)  # last map 4x4 = the window: neither shifts
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], stock(x)[0], rtol=1e-10, atol=1e-10)


def test_mask_padding_keeps_padded_tokens_out_of_the_window_attention():
    """``mask_padding=True``: a real token attends only to real tokens of its window, so a 5x5 map in a 7x7
    window is attention over its 25 tokens with their relative position biases."""
    from boat_mm.models.backbones.boat_swin import BOATSwinBlock
    torch.manual_seed(0)
    block = BOATSwinBlock(8, 2, window_size=7, shift=False, use_fsla=False, mask_padding=True).double().eval()
    x = torch.randn(2, 25, 8, dtype=torch.float64)
    attn = block.attn
    real = (torch.arange(5)[:, None] * 7 + torch.arange(5)[None, :]).flatten()  # the 5x5 corner of the window
    q, k, v = attn.qkv(x).view(2, 25, 3, 2, 4).permute(2, 0, 3, 1, 4)
    bias = attn.relative_position_bias_table[attn.relative_position_index[real][:, real]].permute(2, 0, 1)
    expected = ((q * attn.scale) @ k.transpose(-2, -1) + bias).softmax(-1) @ v
    expected = attn.proj(expected.transpose(1, 2).reshape(2, 25, 8))
    with torch.no_grad():
        torch.testing.assert_close(block.image_attention(x, (5, 5)), expected, rtol=1e-12, atol=1e-12)
        block.mask_padding = False  # the stock way: the 24 padded (zero) tokens are keys too
        assert (block.image_attention(x, (5, 5)) - expected).abs().max() > 1e-3


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_dropouts_are_where_the_stock_swin_puts_them(scope):
    """Dropout changes nothing in eval, so the float64 comparison cannot see it: the rates of every dropout the
    stock class builds are compared instead (mmpretrain's ``drop_rate`` is the embedding's only; its blocks'
    come from ``attn_cfgs`` / ``ffn_cfgs``, including ``dropout_layer``)."""
    block_cfgs = dict(attn_cfgs=dict(proj_drop=0.05, dropout_layer=dict(type='DropPath', drop_prob=0.15)),
                      ffn_cfgs=dict(ffn_drop=0.25))
    extra = dict(stage_cfgs=dict(block_cfgs=block_cfgs)) if scope == 'mmpretrain' else dict(attn_drop_rate=0.2)
    stock, ours = _build(scope, drop_rate=0.1, drop_path_rate=0.3, **extra)

    def rates(model, kinds):  # the distinct rates (the stock builds one Dropout per use, BOAT's MLP one for two)
        return {round(float(getattr(m, 'p', getattr(m, 'drop_prob', 0.0))), 6) for m in model.modules()
                if type(m).__name__ in kinds and getattr(m, 'p', getattr(m, 'drop_prob', 0.0)) > 0}
    assert rates(ours, ('Dropout',)) == rates(stock, ('Dropout',))
    assert rates(ours, ('DropPath',)) == rates(stock, ('DropPath',))
    block = ours.stages[0].blocks[1]
    expected = (0.05, 0.25, 0.15) if scope == 'mmpretrain' else (0.1, 0.1, ours.stages[0].blocks[1].drop_path.drop_prob)
    assert (block.attn.proj_drop.p, block.mlp.drop.p, (block.attention_dropout or block.drop_path).drop_prob) == \
        pytest.approx(expected)
    assert ours.drop_after_pos.p == 0.1
