"""GPU checks (skipped without CUDA; `pytest tests -m cuda` on a GPU machine with the full stack;
the lent GPU machine runs the same checks in `benchmarks/gpu_check.py`).

The CUDA path is the torch clustering, batched over every row and group; these tests check on a real
device what the CPU tests prove by construction: the same clusters as the CPU kernel on tie-free inputs,
no host-device synchronisation in a forward pass, AMP training steps, and torch.compile."""
import pytest
import torch
from conftest import BACKBONES, cluster_sets, tie_free_images, tie_free_queries, tiny_arch

from boat_mm import FeatureSpaceLocalAttention
from boat_mm.models.layers.feature_space_attention import balanced_hierarchical_clustering, plan_clusters

pytestmark = pytest.mark.cuda  # skipped without CUDA (conftest.py)

TINY = {cls: tiny_arch(cls, embed_dims=32) for cls in BACKBONES}


@pytest.mark.parametrize('num_tokens', [3136, 825, 12544])
def test_cuda_clusters_equal_the_cpu_kernel_in_float64(num_tokens):
    torch.manual_seed(0)
    q = torch.randn(6, num_tokens, 32, dtype=torch.float64)
    plan = plan_clusters(num_tokens)
    on_cpu = balanced_hierarchical_clustering(q, plan)
    on_cuda = balanced_hierarchical_clustering(q.cuda(), plan_clusters(num_tokens, device=torch.device('cuda')))
    assert torch.equal(cluster_sets(on_cuda.cpu(), plan), cluster_sets(on_cpu, plan))


@pytest.mark.parametrize('num_tokens', [3136, 825])
def test_cuda_clusters_in_float32_are_the_float64_clusters_on_tie_free_queries(num_tokens):
    q = tie_free_queries(4, num_tokens, 32)
    plan = plan_clusters(num_tokens)
    expected = cluster_sets(balanced_hierarchical_clustering(q.double(), plan, use_native=False), plan)
    on_cuda = balanced_hierarchical_clustering(q.cuda(), plan_clusters(num_tokens, device=torch.device('cuda')))
    assert torch.equal(cluster_sets(on_cuda.cpu(), plan), expected)


def test_fsla_forward_has_no_host_sync():
    """CUDA's sync debug mode raises on any synchronising call (.item(), nonzero, a blocking copy)."""
    module = FeatureSpaceLocalAttention(96, 3).cuda().eval()
    x = torch.randn(2, 97 * 131, 96, device='cuda')
    module(x, (97, 131))  # plans and masks are built (and cached) outside the checked call
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        with torch.no_grad():
            module(x, (97, 131))
    finally:
        torch.cuda.set_sync_debug_mode('default')


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=['fp16', 'bf16'])
@pytest.mark.parametrize('cls', list(TINY), ids=lambda c: c.__name__)
def test_amp_training_step(cls, dtype):
    torch.manual_seed(0)
    model = cls(arch=TINY[cls], drop_path_rate=0.1).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler('cuda', enabled=dtype == torch.float16)
    x = torch.randn(2, 3, 224, 160, device='cuda')
    with torch.autocast('cuda', dtype=dtype):
        loss = sum(out.float().pow(2).mean() for out in model(x))
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize('cls', list(TINY), ids=lambda c: c.__name__)
def test_torch_compile_on_cuda(cls):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = cls(arch=TINY[cls]).cuda().eval()
    x = tie_free_images(model, (2, 3, 224, 224)).cuda()  # compiled vs eager: two arithmetics
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model, fullgraph=True)(x)
    for a, b in zip(eager, compiled):
        assert ((a - b).abs() > 1e-3).float().mean() < 1e-3
