"""Backbones under bad or extreme inputs: tiny and extreme-aspect images, wrong channels, invalid arguments,
NaN in one image of a batch, low-precision autocast."""

import pytest
import torch
from conftest import BACKBONES, cpu_fp16, tiny_backbone

import boat_mm  # noqa: F401
from boat_mm import BOATSwinTransformer, FeatureSpaceLocalAttention


def tiny(cls, **kwargs):
    return tiny_backbone(cls, **kwargs).eval()


# --- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize('cls', BACKBONES)
@pytest.mark.parametrize('size', [(1, 1), (5, 3), (32, 32), (32, 2048), (2048, 32)])
def test_tiny_and_extreme_aspect_inputs(cls, size):
    model = tiny(cls)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert all(torch.isfinite(o).all() for o in outs)
    assert all(o.shape[2] >= 1 and o.shape[3] >= 1 for o in outs)


@pytest.mark.parametrize('cls', BACKBONES)
def test_wrong_channels_fail_before_any_work(cls, monkeypatch):
    model = tiny(cls)

    def no_work(*args, **kwargs):
        raise AssertionError('the patch embedding ran before the input was checked')

    monkeypatch.setattr(model.patch_embed, 'forward', no_work)
    for bad in (torch.randn(2, 1, 64, 64), torch.randn(2, 4, 64, 64), torch.randn(3, 64, 64)):
        with pytest.raises(ValueError, match=r'expects images of shape \(B, 3, H, W\), got'):
            model(bad)


@pytest.mark.parametrize('kwargs, match', [
    (dict(arch='giant'),
     r"unknown arch 'giant'; choose one of \['b', 'base', 'l', 'large', 's', 'small', 't', 'tiny'\]"),
    (dict(fsla_cfg=dict(cluster_size=1)), 'cluster_size must be >= 2'),
    (dict(fsla_cfg=dict(overlap=-3)), 'overlap must be >= 0'),
    (dict(fsla_cfg=dict(temperature=0.0)), 'temperature must be > 0'),
    (dict(fsla_cfg=dict(kmeans_iters=-1)), 'kmeans_iters must be >= 0'),
    (dict(fsla_cfg=dict(clusters=64)), r"fsla_cfg has unknown keys \['clusters'\]"),
    (dict(fsla_cfg=dict(overlap=8), overlap=10), r'overlap=10 contradicts fsla_cfg overlap=8'),
    (dict(fsla_stages=(7,)), r'fsla_stages must be stage indices in \[0, 4\)'),
    (dict(out_indices=(0, 9)), r'out_indices must be stage indices in \[0, 4\)'),
    (dict(frozen_stages=8), r'frozen_stages must be in \[-1, 4\]'),
])
def test_invalid_arguments_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BOATSwinTransformer(**kwargs)


NAN, INF = float('nan'), float('inf')


@pytest.mark.parametrize('cls', BACKBONES)
@pytest.mark.parametrize('kwargs, match', [
    (dict(fsla_cfg=dict(temperature=NAN)), r'fsla_cfg temperature must be > 0 and finite, got nan'),
    (dict(fsla_cfg=dict(temperature=INF)), r'fsla_cfg temperature must be > 0 and finite, got inf'),
    (dict(fsla_cfg=dict(temperature=-1.0)), r'fsla_cfg temperature must be > 0 and finite, got -1.0'),
    (dict(fsla_cfg=dict(qk_scale=NAN)), r'fsla_cfg qk_scale must be > 0 and finite \(or None\), got nan'),
    (dict(fsla_cfg=dict(qk_scale=0.0)), r'fsla_cfg qk_scale must be > 0 and finite \(or None\), got 0.0'),
    (dict(fsla_cfg=dict(cluster_size=49.5)), r'fsla_cfg cluster_size must be an int, got 49.5'),
    (dict(fsla_cfg=dict(overlap=NAN)), r'fsla_cfg overlap must be an int, got nan'),
    (dict(in_channels=0), r'in_channels=0 is not supported; images need at least one channel'),
    (dict(in_channels=-3), r'in_channels=-3 is not supported'),
    (dict(drop_path_rate=1.0), r'drop_path_rate=1.0 is not supported; a rate in \[0, 1\) is expected'),
    (dict(drop_path_rate=-0.1), r'drop_path_rate=-0.1 is not supported'),
    (dict(drop_path_rate=NAN), r'drop_path_rate=nan is not supported'),
    (dict(img_size=(224, 224, 224)), r'img_size=\(224, 224, 224\) is not supported; the size of image should be'),
])
def test_bad_values_are_refused_at_construction_by_both_backbones(cls, kwargs, match):
    """Non-finite or non-positive FSLA settings (NaN passes a `<= 0` test), no image channels, a stochastic
    depth outside [0, 1), an image size of the wrong length: refused, naming the argument and the value."""
    with pytest.raises(ValueError, match=f'{cls.__name__}: ' + match):
        cls(**kwargs)


def test_swin_pretrain_img_size_of_the_wrong_length_is_refused_as_the_stock_swin_refuses_it():
    with pytest.raises(ValueError, match=r'pretrain_img_size=\(224, 224, 224\) is not supported; the size of image '
                                         r'should be an int or have length 1 or 2'):
        BOATSwinTransformer(pretrain_img_size=(224, 224, 224))
    for ok in (224, (224,), (224, 224), [384, 384]):
        BOATSwinTransformer(arch=dict(embed_dims=16, depths=(1, 1), num_heads=(1, 1)), pretrain_img_size=ok)


def test_fsla_module_refuses_a_nan_temperature():
    with pytest.raises(ValueError, match='temperature must be > 0 and finite, got nan'):
        FeatureSpaceLocalAttention(32, 2, temperature=NAN)


@pytest.mark.parametrize('cls', BACKBONES)
def test_a_batch_of_zero_images_is_a_clear_error(cls):
    model = tiny(cls)
    with pytest.raises(ValueError, match=r'got a batch of 0 images \(0, 3, 64, 64\): nothing to encode'):
        model(torch.randn(0, 3, 64, 64))


@pytest.mark.parametrize('cls', BACKBONES)
def test_nan_in_one_image_leaves_the_others_exact(cls):
    """Documented behaviour: NaN/Inf propagate within their own image only; every other image of the
    batch gives what it gives alone (in float64: batch 3 and batch 1 run different kernel shapes)."""
    model = tiny(cls).double()
    x = torch.randn(3, 3, 64, 96, dtype=torch.float64)
    poisoned = x.clone()
    poisoned[0, :, 10:20, 30:40] = float('nan')
    poisoned[0, 1, 0, 0] = float('inf')
    with torch.no_grad():
        batched = model(poisoned)
        alone = [model(x[i:i + 1]) for i in (1, 2)]
    for level, out in enumerate(batched):
        assert not torch.isfinite(out[0]).all()
        for j, i in enumerate((1, 2)):
            assert torch.isfinite(out[i]).all()
            torch.testing.assert_close(out[i:i + 1], alone[j][level], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('dtype', [pytest.param(torch.bfloat16, id='bf16'), cpu_fp16])
@pytest.mark.parametrize('kind', ['constant', 'large'])
def test_fsla_in_low_precision_autocast_stays_finite(dtype, kind):
    torch.manual_seed(0)
    module = FeatureSpaceLocalAttention(32, 2).eval()
    x = torch.ones(2, 3136, 32) if kind == 'constant' else 1e4 * torch.randn(2, 3136, 32)
    with torch.no_grad(), torch.autocast('cpu', dtype=dtype):
        out = module(torch.nn.functional.layer_norm(x, (32,)) if kind == 'constant' else x, (56, 56))
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize('cls', BACKBONES)
def test_backbone_bf16_autocast_with_large_inputs(cls):
    model = tiny(cls)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(1e4 * torch.randn(1, 3, 64, 64))
        const = model(torch.full((1, 3, 64, 64), 0.5))
    assert all(torch.isfinite(o.float()).all() for o in outs + const)
