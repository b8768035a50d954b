"""Leaving eager PyTorch: torch.export of both backbones, the torch clustering with no host syncs,
and the CPU-cache chunking confined to eager CPU runs."""
import re

import pytest
import torch
from conftest import TINY_ARCHS, TorchClustering, needs_compiler, tie_free_images

import boat_mm.models.layers.clustering as fsla_module
from boat_mm import BOATSwinTransformer
from boat_mm.models.layers.feature_space_attention import balanced_hierarchical_clustering, plan_clusters

pytestmark = needs_compiler  # every test here traces with dynamo (torch.export / torch.compile)

TINY = TINY_ARCHS
# ATen ops that copy a tensor value to the host (a device sync on GPU) or have data-dependent shapes.
HOST_SYNC_OPS = re.compile(r'^aten\.(_local_scalar_dense|nonzero|item|masked_select|unique\w*)\.')


def _host_syncs(exported):
    return [str(node.target) for node in exported.graph.nodes
            if node.op == 'call_function' and HOST_SYNC_OPS.match(str(node.target))]


@pytest.mark.parametrize('size', [(224, 224), (97, 131)], ids=['224', '97x131'])
@pytest.mark.parametrize('cls', list(TINY), ids=lambda c: c.__name__)
def test_torch_export_equals_eager(cls, size):
    """The exported program (torch clustering) against eager (the CPU kernel), two arithmetics: within 1e-10
    in float64; in float32, on a tie-free input (tests/conftest.py), no output moves."""
    torch.manual_seed(0)
    model = cls(arch=TINY[cls]).eval()
    x = tie_free_images(model, (1, 3, *size))
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        eager, traced = model(x), exported.module()(x)
    for a, b in zip(eager, traced):
        assert a.shape == b.shape and ((a - b).abs() > 1e-5).float().mean() == 0
    model64, x64 = model.double(), x.double()
    exported64 = torch.export.export(model64, (x64,))
    with torch.no_grad():
        for a, b in zip(model64(x64), exported64.module()(x64)):
            assert (a - b).abs().max() <= 1e-10
    assert not _host_syncs(exported)


@pytest.mark.parametrize('num_tokens', [3136, 825], ids=['released', 'padded'])
def test_torch_clustering_exports_with_no_host_sync(num_tokens):
    """torch.export refuses data-dependent control flow and .item(): exporting proves the torch
    clustering (the GPU path) runs without host-device synchronisation; it gives the same clusters."""
    torch.manual_seed(0)
    q = torch.randn(4, num_tokens, 16, dtype=torch.float64)
    exported = torch.export.export(TorchClustering(num_tokens), (q,))
    assert not _host_syncs(exported)
    assert torch.equal(exported.module()(q), TorchClustering(num_tokens)(q))


def test_cache_chunking_runs_only_in_eager_cpu(monkeypatch):
    """The per-row / per-group loop that keeps CPU work in cache must not run on other devices (a host
    loop of small launches on a GPU) nor in traced graphs: there every level is one batched step."""
    calls = []
    original = fsla_module._split_levels

    def counting(*args, **kwargs):
        calls.append(args[0].device.type)
        return original(*args, **kwargs)

    monkeypatch.setattr(fsla_module, '_split_levels', counting)
    monkeypatch.setattr(fsla_module, 'CACHE_CHUNK_ELEMENTS', 3136 * 16 // 4)  # a quarter of a row per chunk
    q = torch.randn(2, 3136, 16)
    balanced_hierarchical_clustering(q, plan_clusters(3136), use_native=False)
    assert len(calls) > 1  # eager CPU: chunked
    calls.clear()
    balanced_hierarchical_clustering(q.to('meta'), plan_clusters(3136, device=torch.device('meta')),
                                     use_native=False)
    assert calls == ['meta']  # any other device: one batched call over all levels
    calls.clear()
    torch.export.export(TorchClustering(3136), (q,))
    assert len(calls) == 1  # traced: batched too


def test_tracing_never_poisons_the_plan_caches():
    """Plans and masks built while tracing are fake tensors: caching them would break later eager calls."""
    torch.manual_seed(0)
    model = BOATSwinTransformer(arch=TINY[BOATSwinTransformer]).eval()
    x = torch.randn(1, 3, 76, 92)  # a size no other test uses, so the caches start cold
    torch.export.export(model, (x,))
    with torch.no_grad():
        outs = model(x)
    assert all(type(o) is torch.Tensor and torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('cls', list(TINY), ids=lambda c: c.__name__)
def test_torch_compile_fullgraph_forward_and_backward(cls):
    """fullgraph=True fails on any graph break: the whole backbone, FSLA included, is one graph in
    training (drop path on, forward + backward) and in eval. The aot_eager backend runs dynamo and AOT
    autograd as inductor does, without its C++ code generation (minutes on 2 cores; the benchmark
    suite measures inductor)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = cls(arch=TINY[cls], drop_path_rate=0.1)
    compiled = torch.compile(model, fullgraph=True, backend='aot_eager')
    x = torch.randn(2, 3, 64, 80)
    sum(out.mean() for out in compiled(x)).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    x = tie_free_images(model, x.shape)  # compiled (torch clustering, decomposed ops) vs eager: two arithmetics
    with torch.no_grad():
        for a, b in zip(compiled(x), model(x)):
            assert ((a - b).abs() > 1e-5).float().mean() == 0


@pytest.mark.parametrize('cls', list(TINY), ids=lambda c: c.__name__)
def test_compiled_graph_builds_no_plan_or_mask_and_runs_on_the_models_device(cls):
    """Clustering plans and window masks are constants of a compiled graph (``constant_under_compile``): on a
    model that is not on the CPU (here 'meta', which needs no GPU), no node of the graph makes a CPU tensor.
    Before, the traced plan and mask builders put 54 (FSLA) to 290 (BOAT-Swin) CPU ops in every compiled
    call, which on the GPU machine inductor compiled to C++ kernels and failed to build (2026-12-04)."""
    torch._dynamo.reset()
    graphs = []

    def recording_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module
    model = cls(arch=TINY[cls]).to('meta').eval()
    with torch.no_grad():
        torch.compile(model, fullgraph=True, backend=recording_backend, dynamic=False)(
            torch.randn(1, 3, 64, 80, device='meta'))
    made = [(node.format_node()[:120], value.device) for graph in graphs for node in graph.graph.nodes
            for value in [node.meta.get('example_value', node.meta.get('val'))]
            if isinstance(value, torch.Tensor)]
    assert len(graphs) == 1 and made
    assert [entry for entry in made if entry[1].type != 'meta'] == []
