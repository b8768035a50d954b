"""FSLA's fused kernels as torch custom ops (issue 39): torch.compile keeps them (no graph break, the fused
launches instead of ~415 torch ops, forward and gradients equal eager in float64), per-architecture gating,
and the fallback to the torch ops when a fused kernel fails to compile or launch. Run by Triton's interpreter
on CPU tensors (``TRITON_INTERPRET=1``, set by conftest without a GPU)."""
import logging

import pytest
import torch
from conftest import needs_compiler

from boat_mm.analysis.kernel_census import CENSUS_TARGETS, count_launches
from boat_mm.models.layers import fsla_ops, triton_kernels
from boat_mm.models.layers import triton_launch_configs as configs
from boat_mm.models.layers.clustering import TRITON
from boat_mm.models.layers.feature_space_attention import FeatureSpaceLocalAttention
from boat_mm.models.layers.native_clustering import NATIVE_ENV

pytestmark = pytest.mark.skipif(
    not (triton_kernels.interpreting() and triton_kernels.triton_available(torch.device('cpu'))),
    reason='runs the fused kernels in Triton\'s interpreter: TRITON_INTERPRET=1 with triton '
           f'>= {".".join(map(str, triton_kernels.MIN_INTERPRETER_TRITON))}')
needs_custom_ops = pytest.mark.skipif(not fsla_ops.CUSTOM_OPS, reason='custom ops need torch >= 2.6')
HEADS, HEAD_DIMS = 2, 16
# 25 x 33 = 825 tokens: pads and borrowed keys from padded siblings; four split levels.
HW = (25, 33)


@pytest.fixture
def fresh_failures():
    """Each test starts and ends with no remembered kernel failure."""
    fsla_ops._FAILED.clear()
    yield
    fsla_ops._FAILED.clear()


def _module_and_input(seed=0):
    torch.manual_seed(seed)
    module = FeatureSpaceLocalAttention(HEADS * HEAD_DIMS, HEADS).double()
    x = torch.randn(2, HW[0] * HW[1], HEADS * HEAD_DIMS, dtype=torch.float64)
    return module, x


def _run(module, x):
    """Output and gradients (input, then every parameter) of one training step."""
    module.zero_grad()
    x = x.clone().requires_grad_(True)
    out = module(x, HW)
    out.backward(torch.cos(torch.arange(out.numel(), dtype=out.dtype)).view_as(out))
    return [out.detach(), x.grad] + [p.grad.clone() for p in module.parameters()]


def _assert_runs_equal(got, expected, tol=1e-11):
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@needs_compiler
@needs_custom_ops
def test_aot_eager_compile_keeps_the_fused_ops(monkeypatch, fresh_failures):
    """torch.compile(backend='aot_eager', fullgraph=True) of an FSLA block traces the custom ops with fake
    tensors (no graph break: fullgraph would raise), its graph holds the fused ops and not the torch
    clustering, and its forward and gradients equal eager's in float64. Its kernel census counts the fused
    launches and a few dozen graph ops (a dispatch mode cannot watch a compiled call: the aten ops of the
    forward graph are its nodes), where the torch ops issue hundreds."""
    monkeypatch.setenv(NATIVE_ENV, TRITON)
    module, x = _module_and_input()
    eager = _run(module, x)
    graphs = []

    def recording_aot_eager(graph_module, example_inputs):
        graphs.append(graph_module)
        from torch._dynamo.backends.debugging import aot_eager
        return aot_eager(graph_module, example_inputs)

    torch._dynamo.reset()
    compiled = torch.compile(module, backend=recording_aot_eager, fullgraph=True)
    _assert_runs_equal(_run(compiled, x), eager)
    targets = [str(node.target) for graph in graphs for node in graph.graph.nodes if node.op == 'call_function']
    assert 'boat_mm.fsla_cluster.default' in targets and 'boat_mm.fsla_attention.default' in targets, targets
    assert not any('sort' in target for target in targets), targets  # the torch clustering sorts every level
    with count_launches() as launches, torch.no_grad():
        compiled(x.clone(), HW)
    assert launches['triton:launch'] == 2 * 4 + 1  # two launches per split level (4 levels), one attention
    assert len(targets) + launches['triton:launch'] <= CENSUS_TARGETS['forward'], targets
    torch._dynamo.reset()


@needs_compiler
@needs_custom_ops
def test_export_still_records_the_torch_ops(monkeypatch):
    """torch.export (and the ONNX exporter on it) must not meet a custom op: it records the torch ops."""
    monkeypatch.setenv(NATIVE_ENV, TRITON)
    module, x = _module_and_input()

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fsla = module

        def forward(self, tokens):
            return self.fsla(tokens, HW)

    exported = torch.export.export(Block().eval(), (x,))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == 'call_function'}
    assert not any(target.startswith('boat_mm.') for target in targets), targets


@pytest.mark.parametrize('kernel', ['_split_keys', '_attention_forward', '_attention_backward'])
def test_a_failing_kernel_falls_back_to_the_torch_ops(kernel, monkeypatch, fresh_failures):
    """A fused kernel that fails to compile (injected: its launch raises the compiler's kind of error) gives
    one warning naming the kernel and the error, and the step's output and gradients are the torch ops' (float64,
    to rounding); later steps take the torch ops without warning again."""
    monkeypatch.setenv(NATIVE_ENV, '0')
    module, x = _module_and_input()
    expected = _run(module, x)
    monkeypatch.setenv(NATIVE_ENV, TRITON)
    kernels = dict(triton_kernels._kernels())

    class CompileFailure:
        def __getitem__(self, grid):
            raise RuntimeError(f'injected compile failure of {kernel}: ptxas fatal')
    kernels[kernel] = CompileFailure()
    monkeypatch.setattr(triton_kernels, '_kernels', lambda: kernels)
    with pytest.warns(RuntimeWarning, match=f'{kernel}.*injected compile failure') as caught:
        got = _run(module, x)
    assert len([w for w in caught if 'fused Triton kernel' in str(w.message)]) == 1
    _assert_runs_equal(got, expected)
    assert len(fsla_ops.failed_kernels()) == 1
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        _assert_runs_equal(_run(module, x), expected)


def test_architectures_outside_the_report_take_the_torch_ops(monkeypatch, caplog):
    """The launcher runs the fused kernels only on the architectures the resource report shows fitting for the
    arithmetic, head dim and cluster size; elsewhere the torch ops, said once in the log."""
    arch = {'value': 86}
    monkeypatch.setattr(triton_kernels, 'device_arch', lambda device: arch['value'])
    monkeypatch.setitem(configs.FUSED_ARCHITECTURES, 'fp32', tuple(a for a in configs.ARCHITECTURES if a != 86))
    ready = triton_kernels.fused_ready
    triton_kernels._fused_ready.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=triton_kernels.__name__):
            assert not ready(torch.device('cpu'), torch.float32, 32)
            assert not ready(torch.device('cpu'), torch.float32, 32)
            assert ready(torch.device('cpu'), torch.bfloat16, 32)
            assert not ready(torch.device('cpu'), torch.bfloat16, 2 * max(configs.HEAD_DIMS))
            assert ready(torch.device('cpu'), torch.bfloat16, 64, 49)
            assert not ready(torch.device('cpu'), torch.bfloat16, 64, 69)  # 128-query tiles of 64-wide heads
            arch['value'] = 75  # T4: no bf16 tensor cores, 128-query tiles only for 16-wide heads
            triton_kernels._fused_ready.cache_clear()
            assert not ready(torch.device('cpu'), torch.bfloat16, 32)
            assert ready(torch.device('cpu'), torch.float16, 32, 49)
            assert not ready(torch.device('cpu'), torch.float16, 32, 69)
        messages = [r.getMessage() for r in caplog.records]
        assert sum('sm_86 with fp32' in m for m in messages) == 1, messages
        assert any('head dim 128' in m for m in messages), messages
    finally:
        triton_kernels._fused_ready.cache_clear()
