"""get_layer_depth (layer-wise lr decay, issue 33) in mmpretrain's meaning, for both backbones."""
import pytest
from conftest import TINY_ARCHS, tiny_backbone

from boat_mm import BOATCSWinTransformer, BOATSwinTransformer


def test_swin_depths_are_mmpretrains_for_every_parameter():
    """BOAT-Swin's parameter names follow mmpretrain's Swin layout (stages.i.blocks.j, stages.i.downsample):
    mmpretrain's own get_layer_depth, on a Swin of the same depths, gives every one of them the same depth."""
    from mmpretrain.models import SwinTransformer
    arch = TINY_ARCHS[BOATSwinTransformer]
    ours = tiny_backbone(BOATSwinTransformer)
    theirs = SwinTransformer(arch=dict(embed_dims=arch['embed_dims'], depths=list(arch['depths']),
                                       num_heads=list(arch['num_heads'])), img_size=64)
    names = [name for name, _ in ours.named_parameters()]
    assert any('.fsla.' in n for n in names) and any('downsample' in n for n in names)
    for name in names:
        assert ours.get_layer_depth(name) == theirs.get_layer_depth(name), name
        assert ours.get_layer_depth('backbone.' + name, 'backbone.') == theirs.get_layer_depth(name), name


@pytest.mark.parametrize('name, depth', [
    ('patch_embed.proj.weight', 0),
    ('stages.0.blocks.0.fsla.qkv.weight', 1),       # stage 0 has one block (depths 1, 2, 2, 1)
    ('stages.1.downsample.proj.weight', 1),         # the convolution before stage 1: after block 1
    ('stages.1.blocks.0.attns.0.lepe.weight', 2),
    ('stages.1.blocks.1.norm1.weight', 3),
    ('stages.3.downsample.norm.weight', 5),
    ('stages.3.blocks.0.mlp.fc2.bias', 6),
    ('norm3.weight', 7),                            # output norms: the last depth, as mmpretrain's Swin
])
def test_cswin_depths(name, depth):
    model = tiny_backbone(BOATCSWinTransformer)
    assert name in dict(model.named_parameters())
    assert model.get_layer_depth(name) == (depth, 8)
    assert model.get_layer_depth('backbone.' + name, 'backbone.') == (depth, 8)


@pytest.mark.parametrize('cls', [BOATSwinTransformer, BOATCSWinTransformer])
def test_names_outside_the_backbone_take_the_last_depth(cls):
    model = tiny_backbone(cls)
    num_layers = sum(TINY_ARCHS[cls]['depths']) + 2
    assert model.get_layer_depth('decode_head.conv_seg.weight', 'backbone.') == (num_layers - 1, num_layers)
