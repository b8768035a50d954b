"""FSLA's fused Triton kernels (issue 32) against the torch path, run by Triton's interpreter on CPU tensors
(``TRITON_INTERPRET=1``, set by conftest without a GPU) or on CUDA: in float64 the same clusters and, to
rounding, the same attention output and gradients; float32 judged by the tie-free rule and the moved share.
And the kernel census: the GPU path's kernel count per FSLA forward and backward stays within its targets."""
import pytest
import torch
from conftest import FLOAT32_MOVED_TOKENS, cluster_sets, moved_token_share, tie_free_queries

from boat_mm.analysis.kernel_census import CENSUS_TARGETS, fsla_kernel_census
from boat_mm.models.layers import cluster_attention, fsla_ops, triton_kernels
from boat_mm.models.layers.clustering import TRITON, balanced_hierarchical_clustering, kernel_choice, plan_clusters
from boat_mm.models.layers.feature_space_attention import FeatureSpaceLocalAttention
from boat_mm.models.layers.native_clustering import NATIVE_ENV

if torch.cuda.is_available() and not triton_kernels.interpreting():
    DEVICE = torch.device('cuda')
else:
    DEVICE = torch.device('cpu')
pytestmark = pytest.mark.skipif(
    not triton_kernels.triton_available(DEVICE),
    reason=f'the Triton kernels need triton >= {".".join(map(str, triton_kernels.MIN_TRITON))} on a GPU, or '
           f'TRITON_INTERPRET=1 with triton >= {".".join(map(str, triton_kernels.MIN_INTERPRETER_TRITON))}; this '
           f'has triton {".".join(map(str, triton_kernels.TRITON_VERSION))}')

# 3136 = 49 * 64 (stage 1 at 224: six levels, no pads), 825 (pads, overlap from padded siblings), 1 (one
# cluster, no split, no overlap).
TOKEN_COUNTS = [3136, 825, 1]
HEADS, HEAD_DIMS = 2, 16


@pytest.fixture
def triton_path(monkeypatch):
    """The one switch set to the Triton kernels for this test."""
    monkeypatch.setenv(NATIVE_ENV, TRITON)
    assert kernel_choice(DEVICE) == TRITON


def _qkv(num_tokens, dtype, seed=0, images=1):
    """A (B, N, 3, H, d) qkv projection, as FSLA's Linear gives it."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(images, num_tokens, 3, HEADS, HEAD_DIMS, generator=generator, dtype=torch.float64).to(
        device=DEVICE, dtype=dtype)


def _torch_clusters(q, plan):
    """The torch path's clustering of q (B, H, N, d)."""
    return balanced_hierarchical_clustering(q.reshape(-1, q.shape[-2], q.shape[-1]), plan, use_native=False)


@pytest.mark.parametrize('num_tokens', TOKEN_COUNTS)
def test_float64_clusters_equal_the_torch_path(num_tokens, triton_path):
    """Read in place from a strided view of qkv (as FSLA passes it), the fused clustering gives exactly the
    torch path's clusters in float64."""
    plan = plan_clusters(num_tokens, device=DEVICE)
    q = _qkv(num_tokens, torch.float64)[:, :, 0].transpose(1, 2)
    assert q.stride(2) == 3 * HEADS * HEAD_DIMS  # a strided view: read in place
    fused = balanced_hierarchical_clustering(q, plan)
    assert fused.shape == (HEADS, plan.num_slots)
    assert torch.equal(fused.sort(-1).values, torch.arange(plan.num_slots, device=DEVICE).expand_as(fused))
    assert torch.equal(cluster_sets(fused, plan), cluster_sets(_torch_clusters(q, plan), plan))


@pytest.mark.parametrize('num_tokens', [3136, 825])
def test_float32_clusters(num_tokens, triton_path):
    """float32: on tie-free queries exactly the float64 clusters; on random ones few tokens moved."""
    plan = plan_clusters(num_tokens, device=DEVICE)
    q = tie_free_queries(2, num_tokens, HEAD_DIMS).to(DEVICE)
    reference = _torch_clusters(q.double().unsqueeze(0), plan)
    assert torch.equal(cluster_sets(balanced_hierarchical_clustering(q, plan), plan), cluster_sets(reference, plan))
    q = torch.randn(1, HEADS, num_tokens, HEAD_DIMS, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    fused = balanced_hierarchical_clustering(q, plan)
    assert moved_token_share(fused, _torch_clusters(q.double(), plan), plan) <= FLOAT32_MOVED_TOKENS


def test_bfloat16_queries_cluster_in_float32(triton_path):
    """bf16 queries (an autocast qkv projection) are clustered in fp32 arithmetic, as the torch path does."""
    plan = plan_clusters(825, device=DEVICE)
    q = _qkv(825, torch.bfloat16)[:, :, 0].transpose(1, 2)
    fused = balanced_hierarchical_clustering(q, plan)
    assert moved_token_share(fused, _torch_clusters(q.double(), plan), plan) <= FLOAT32_MOVED_TOKENS


def _attention_and_gradients(attend, qkv, perm, plan, grad_out):
    qkv = qkv.detach().requires_grad_(True)
    out = attend(qkv)
    out.backward(grad_out)
    return out.detach(), qkv.grad


@pytest.mark.parametrize('num_tokens', TOKEN_COUNTS)
def test_float64_attention_and_gradients_equal_autograd(num_tokens, triton_path):
    """The fused attention's output and its fused backward's gradient of q, k and v (own cluster and the keys
    a sibling borrows) equal autograd's of the torch ops, to float64 rounding."""
    plan = plan_clusters(num_tokens, device=DEVICE)
    qkv = _qkv(num_tokens, torch.float64)
    perm = _torch_clusters(qkv[:, :, 0].transpose(1, 2), plan)
    scale = HEAD_DIMS ** -0.5
    grad_out = torch.randn(1, num_tokens, HEADS * HEAD_DIMS, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(2)).to(DEVICE)
    fused = _attention_and_gradients(
        lambda t: fsla_ops.attend(t, perm, plan, scale),
        qkv, perm, plan, grad_out)
    plain = _attention_and_gradients(lambda t: cluster_attention._attend(t, perm, plan, scale, 0.0), qkv, perm, plan,
                                     grad_out)
    for got, expected in zip(fused, plain):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_float32_attention_matches(triton_path):
    """float32 (IEEE products, no TF32): the fused attention within float32 rounding of the torch ops."""
    plan = plan_clusters(825, device=DEVICE)
    qkv = _qkv(825, torch.float32)
    perm = _torch_clusters(qkv[:, :, 0].transpose(1, 2).double(), plan)
    scale = HEAD_DIMS ** -0.5
    fused = fsla_ops.attend(qkv, perm, plan, scale)
    torch.testing.assert_close(fused, cluster_attention._attend(qkv, perm, plan, scale, 0.0), rtol=1e-5, atol=1e-5)


def _module_gradients(hw, monkeypatch, setting):
    monkeypatch.setenv(NATIVE_ENV, setting)
    torch.manual_seed(0)
    module = FeatureSpaceLocalAttention(HEADS * HEAD_DIMS, HEADS).double().to(DEVICE)
    x = torch.randn(1, hw[0] * hw[1], HEADS * HEAD_DIMS, dtype=torch.float64, device=DEVICE, requires_grad=True)
    out = module(x, hw)
    out.backward(torch.ones_like(out))
    return [out, x.grad] + [p.grad for p in module.parameters()]


@pytest.mark.parametrize('hw', [(25, 33), (1, 1)])
def test_module_on_the_triton_path_equals_the_torch_path(hw, monkeypatch):
    """The whole FSLA module (clustering, attention, LePE, projections) behind the one switch: the same output
    and gradients in float64."""
    triton_run = _module_gradients(hw, monkeypatch, TRITON)
    torch_run = _module_gradients(hw, monkeypatch, '0')
    for got, expected in zip(triton_run, torch_run):
        torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-11)


# The census runs the Triton path on CPU tensors, in the interpreter (on a GPU the check profiles CUDA kernels).
needs_interpreter = pytest.mark.skipif(not triton_kernels.interpreting(), reason='the census needs TRITON_INTERPRET=1')


@needs_interpreter
def test_kernel_census_within_targets():
    """Device kernels of one FSLA module on the GPU path (fused Triton kernels): forward <= 40, backward <= 30,
    at most 4 more per extra split level (1024 -> 16384 tokens: 4 -> 8 levels). The torch path issues ~10x
    more (benchmarks/bench_kernel_census.py prints both)."""
    small, large = fsla_kernel_census(1024), fsla_kernel_census(16384)
    for census in (small, large):
        assert census['forward'] <= CENSUS_TARGETS['forward'], census['forward_ops']
        assert census['backward'] <= CENSUS_TARGETS['backward'], census['backward_ops']
    extra_levels = large['levels'] - small['levels']
    assert extra_levels == 4
    for phase in ('forward', 'backward'):
        assert large[phase] - small[phase] <= CENSUS_TARGETS['per_level'] * extra_levels
    torch_path = fsla_kernel_census(3136, 'torch')
    assert torch_path['forward'] > 4 * CENSUS_TARGETS['forward']  # the census sees what it guards against


@needs_interpreter
def test_dry_census_counts_what_a_real_run_launches():
    """The census skips Triton launches (dry) because no launch depends on a value: a real interpreted run
    counts the same kernels."""
    dry, real = fsla_kernel_census(200, dry=True), fsla_kernel_census(200, dry=False)
    assert dry['forward_ops'] == real['forward_ops'] and dry['backward_ops'] == real['backward_ops']
