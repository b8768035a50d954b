"""BOAT-Swin and BOAT-CSWin backbones: structure, shapes at any size, training switches."""
import pytest
import torch
from conftest import BACKBONES, TINY_ARCHS  # noqa: F401
from conftest import tiny_backbone as tiny

from boat_mm import BOATCSWinTransformer, BOATSwinTransformer

# Whole 1000-class classifiers (backbone + GAP + linear head) as released, parameters only.
RELEASED_PARAMS = {
    (BOATSwinTransformer, 'tiny'): 30_265_186,
    (BOATSwinTransformer, 'small'): 55_158_898,
    (BOATSwinTransformer, 'base'): 97_612_960,
    (BOATCSWinTransformer, 'tiny'): 26_390_952,
    (BOATCSWinTransformer, 'small'): 40_112_488,
    (BOATCSWinTransformer, 'base'): 89_628_712,
}
NUM_CLASSES = 1000


@pytest.mark.parametrize('cls, arch', list(RELEASED_PARAMS))
def test_classifier_parameter_count_matches_release(cls, arch):
    backbone = cls(arch=arch, out_indices=(3,))
    head = backbone.num_features[-1] * NUM_CLASSES + NUM_CLASSES
    assert sum(p.numel() for p in backbone.parameters()) + head == RELEASED_PARAMS[(cls, arch)]


@pytest.mark.parametrize('cls, arch', list(RELEASED_PARAMS))
def test_released_archs_run_at_small_input(cls, arch):
    model = cls(arch=arch[0]).eval()  # the 't'/'s'/'b' aliases
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
    assert [o.shape[1] for o in outs] == model.num_features
    assert [o.shape[2:] for o in outs] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('cls', BACKBONES)
@pytest.mark.parametrize('size', [(224, 224), (512, 512), (800, 1216), (97, 131), (32, 32)])
def test_output_channels_and_strides(cls, size):
    model = tiny(cls).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert len(outs) == 4
    for i, out in enumerate(outs):
        stride = 4 * 2 ** i
        assert out.shape[1] == model.num_features[i]
        # Within one token of H / stride: Swin pads to the patch grid, CSWin's convs round down.
        assert abs(out.shape[2] - size[0] / stride) <= 1 and abs(out.shape[3] - size[1] / stride) <= 1
        assert torch.isfinite(out).all()


@pytest.mark.parametrize('cls', BACKBONES)
def test_out_indices_select_outputs(cls):
    model = tiny(cls, out_indices=(1, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [model.num_features[1], model.num_features[3]]
    assert hasattr(model, 'norm1') and not hasattr(model, 'norm0')


@pytest.mark.parametrize('cls', BACKBONES)
def test_backward_reaches_every_parameter(cls):
    model = tiny(cls).train()
    outs = model(torch.randn(2, 3, 97, 131))
    sum(o.mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize('cls', BACKBONES)
def test_with_cp_gives_same_output_and_gradients(cls):
    x = torch.randn(2, 3, 64, 80)
    grads = []
    results = []
    for with_cp in (False, True):
        model = tiny(cls, with_cp=with_cp, drop_path_rate=0.0).train()
        outs = model(x)
        sum(o.sum() for o in outs).backward()
        results.append(outs)
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('cls', BACKBONES)
def test_with_cp_recomputation_keeps_the_forwards_clusters(cls, monkeypatch):
    """A clustering that would come out differently when the backward recomputes a checkpointed block (GPU
    non-determinism, TF32), forced here: every clustering after the forward's moves each real token to the
    next token's slot. With checkpointing the gradients still equal those of the run without it, because the
    recomputation reuses the forward's permutation instead of clustering again."""
    import boat_mm.models.layers.feature_space_attention as fsla_module
    cluster = fsla_module.balanced_hierarchical_clustering
    calls = []

    def clustering_that_changes_after_the_forward(q, plan, *args, **kwargs):
        perm = cluster(q, plan, *args, **kwargs)
        calls.append(1)
        if len(calls) > forward_calls:
            perm = torch.where(perm < plan.num_tokens, (perm + 1) % plan.num_tokens, perm)
        return perm
    monkeypatch.setattr(fsla_module, 'balanced_hierarchical_clustering', clustering_that_changes_after_the_forward)
    x = torch.randn(2, 3, 64, 80)
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = tiny(cls, with_cp=with_cp, drop_path_rate=0.0).train()
        forward_calls = sum(isinstance(m, fsla_module.FeatureSpaceLocalAttention) for m in model.modules())
        calls.clear()
        sum(o.sum() for o in model(x)).backward()
        assert len(calls) == forward_calls  # with checkpointing too: no second clustering
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('cls', BACKBONES)
def test_frozen_stages_freeze_embedding_and_first_stages(cls):
    model = tiny(cls, frozen_stages=2).train()
    frozen = [model.patch_embed, model.stages[0], model.stages[1], model.norm0, model.norm1]
    for module in frozen:
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())
    for module in (model.stages[2], model.stages[3], model.norm2):
        assert module.training
        assert all(p.requires_grad for p in module.parameters())


@pytest.mark.parametrize('cls', BACKBONES)
def test_norm_eval_keeps_norms_in_eval(cls):
    model = tiny(cls, norm_eval=True).train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(not m.training for m in norms)
    assert model.stages[0].blocks[0].mlp.training


@pytest.mark.parametrize('cls', BACKBONES)
def test_bf16_autocast_on_cpu_is_finite(cls):
    model = tiny(cls).eval()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(torch.randn(1, 3, 97, 131))
    assert all(torch.isfinite(o.float()).all() for o in outs)


@pytest.mark.parametrize('cls', BACKBONES)
def test_images_in_a_batch_are_independent(cls):
    """Batch 3 and batch 1 run different kernel shapes (two arithmetics): compared in float64."""
    model = tiny(cls).double().eval()
    x = torch.randn(3, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        batched = model(x)
        alone = model(x[2:])
    for a, b in zip(batched, alone):
        torch.testing.assert_close(a[2:], b, rtol=1e-10, atol=1e-10)


def test_fsla_placement_follows_release():
    swin = BOATSwinTransformer('tiny')
    for i, stage in enumerate(swin.stages):
        assert [b.fsla is not None for b in stage.blocks] == [j % 2 == 1 and i < 3 for j in range(len(stage.blocks))]
    cswin = BOATCSWinTransformer('tiny')
    for stage in cswin.stages:
        assert [b.fsla is not None for b in stage.blocks] == [j % 2 == 0 for j in range(len(stage.blocks))]
    assert swin.stages[0].blocks[1].fsla.scale == pytest.approx(32 ** -0.5)
    assert cswin.stages[0].blocks[0].fsla.scale == 1.0


@pytest.mark.parametrize('cls', BACKBONES)
def test_bad_arch_and_input_raise_clear_errors(cls):
    with pytest.raises(ValueError, match='unknown arch'):
        cls(arch='huge')
    with pytest.raises(ValueError, match='exactly the keys'):
        cls(arch=dict(embed_dims=16))
    with pytest.raises(ValueError, match='out_indices'):
        cls(arch=TINY_ARCHS[cls], out_indices=(4,))
    model = tiny(cls)
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        model(torch.randn(1, 4, 32, 32))


@pytest.mark.parametrize('cls', BACKBONES)
def test_fsla_cfg_and_its_deprecated_flat_spellings_build_the_same_model(cls, recwarn):
    """One FSLA interface in both backbones: ``fsla_cfg`` (missing keys: released values); the flat arguments
    of earlier versions build the same model and warn once per argument, however many models are built."""
    from boat_mm.models.utils import toolbox_args
    toolbox_args._warned.clear()
    settings = dict(cluster_size=32, overlap=8, kmeans_iters=3, temperature=50.0, qk_scale=0.5)
    new = tiny(cls, fsla_cfg=settings)
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]
    flat = dict(settings, fsla_qk_scale=settings['qk_scale'])
    del flat['qk_scale']
    old = tiny(cls, **flat)
    tiny(cls, **flat)
    warned = [str(w.message) for w in recwarn if issubclass(w.category, DeprecationWarning)]
    assert len(warned) == 5
    assert any('fsla_qk_scale= is deprecated; use fsla_cfg=dict(qk_scale=...)' in m for m in warned)
    fsla = [m for m in new.modules() if type(m).__name__ == 'FeatureSpaceLocalAttention']
    assert fsla and all((m.cluster_size, m.overlap, m.kmeans_iters, m.temperature, m.scale) == (32, 8, 3, 50.0, 0.5)
                        for m in fsla)
    assert all(torch.equal(a, b) for a, b in zip(new.state_dict().values(), old.state_dict().values()))
    assert new.fsla_cfg == old.fsla_cfg == settings
    released = tiny(cls).fsla_cfg
    assert released == {**cls.default_fsla_cfg} and released['cluster_size'] == 49
