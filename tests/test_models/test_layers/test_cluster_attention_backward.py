"""FSLA's gather-free backward (issue 22): the same numbers as autograd's backward of the gathers, no
accumulating scatter anywhere in it, and bit-identical gradients under deterministic algorithms."""
import pytest
import torch
from conftest import BACKBONES, tiny_backbone
from torch.utils._python_dispatch import TorchDispatchMode

from boat_mm.models.layers import cluster_attention as fsa
from boat_mm.models.layers.feature_space_attention import CLUSTER_BACKWARD_ENV, FeatureSpaceLocalAttention

# Token counts: 3136 = 49 * 64 (the released layout), 825 (padded: pad slots, overlap from padded siblings),
# 1 (a single cluster, no overlap).
TOKEN_COUNTS = [(56, 56), (25, 33), (1, 1)]
# Ops whose result depends on the order of accumulation (atomics on CUDA): none may run in FSLA's backward.
ACCUMULATING_OPS = ('index_add', 'scatter_add', 'scatter_reduce', 'index_reduce', 'embedding_dense_backward')
# Autograd nodes whose backward is an accumulating scatter (index_add, index_put with accumulate=True).
SCATTERING_NODES = ('IndexSelectBackward', 'IndexBackward', 'GatherBackward', 'TakeBackward', 'EmbeddingBackward')


def _fsla_gradients(hw, dtype, monkeypatch, backward='gather', flash=True, images_per_chunk=None):
    """Output and every gradient (input and parameters) of one seeded FSLA forward + backward."""
    monkeypatch.setenv(CLUSTER_BACKWARD_ENV, backward)
    if images_per_chunk:
        monkeypatch.setattr(fsa, 'ATTENTION_CHUNK_ELEMENTS', images_per_chunk * hw[0] * hw[1] * 3 * 96)
    if not flash:  # the path of devices without the CPU flash kernels: the backward recomputes the attention
        monkeypatch.setattr(fsa, '_flash_cpu_available', lambda qkv: False)
    torch.manual_seed(0)
    module = FeatureSpaceLocalAttention(96, 3).to(dtype)
    x = torch.randn(3, hw[0] * hw[1], 96, dtype=dtype, requires_grad=True)
    out = module(x, hw)
    out.backward(torch.randn_like(out))
    monkeypatch.undo()
    return out, {'x': x.grad, **{name: p.grad for name, p in module.named_parameters()}}, out.grad_fn


def _graph_nodes(grad_fn):
    """Names of every autograd node reachable from ``grad_fn``."""
    seen, stack, names = set(), [grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return names


class _AtenLog(TorchDispatchMode):
    """Records every aten op (with its keyword arguments) dispatched inside the context."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((func.name(), args, kwargs or {}))
        return func(*args, **(kwargs or {}))


def _accumulating_calls(calls):
    """The logged calls that accumulate through an index: the ops above, and index_put(accumulate=True)."""
    found = [name for name, _, _ in calls if any(op in name for op in ACCUMULATING_OPS)]
    for name, args, kwargs in calls:
        if 'index_put' in name and (kwargs.get('accumulate') or (len(args) > 3 and args[3] is True)):
            found.append(name + '(accumulate=True)')
    return found


@pytest.mark.parametrize('flash,images_per_chunk', [(True, None), (True, 2), (False, None)],
                         ids=['flash', 'flash-chunks-of-2-images', 'recompute'])
@pytest.mark.parametrize('hw', TOKEN_COUNTS, ids=lambda hw: f'N{hw[0] * hw[1]}')
def test_gather_free_backward_equals_autograd_in_float64(hw, flash, images_per_chunk, monkeypatch):
    """Batch of 3: with chunks of 2 images the CPU path runs a full and a partial chunk."""
    out, grads, grad_fn = _fsla_gradients(hw, torch.float64, monkeypatch, flash=flash,
                                          images_per_chunk=images_per_chunk)
    ref_out, ref_grads, ref_fn = _fsla_gradients(hw, torch.float64, monkeypatch, backward='autograd')
    assert 'ClusterAttention' in ''.join(_graph_nodes(grad_fn)), 'the gather-free backward was not taken'
    assert 'ClusterAttention' not in ''.join(_graph_nodes(ref_fn))
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    for name, grad in ref_grads.items():  # x, qkv, proj and LePE (weight and bias)
        torch.testing.assert_close(grads[name], grad, rtol=0, atol=1e-12, msg=f'gradient of {name}')


@pytest.mark.parametrize('hw', TOKEN_COUNTS[:2], ids=lambda hw: f'N{hw[0] * hw[1]}')
def test_gather_free_backward_in_float32_moves_no_gradient(hw, monkeypatch):
    """Same clusters (one arithmetic clusters both runs), so only rounding may differ: the share of gradient
    values that moved beyond 1e-5 of the largest is printed and must be 0."""
    _, grads, _ = _fsla_gradients(hw, torch.float32, monkeypatch)
    _, ref_grads, _ = _fsla_gradients(hw, torch.float32, monkeypatch, backward='autograd')
    for name, grad in ref_grads.items():
        moved = ((grads[name] - grad).abs() > 1e-5 * grad.abs().max()).double().mean().item()
        print(f'{name}: {100 * moved:.4f}% of float32 gradient values moved')
        assert moved == 0.0, name


@pytest.mark.parametrize('hw', TOKEN_COUNTS[:2], ids=lambda hw: f'N{hw[0] * hw[1]}')
def test_fsla_backward_runs_no_accumulating_scatter(hw, monkeypatch):
    """Neither the autograd graph nor the aten ops run by the backward contain a scatter-add; the same
    checks flag autograd's backward of the gathers (the detectors work)."""
    for backward, expect_scatter in (('gather', False), ('autograd', True)):
        monkeypatch.setenv(CLUSTER_BACKWARD_ENV, backward)
        torch.manual_seed(0)
        module = FeatureSpaceLocalAttention(96, 3)
        x = torch.randn(2, hw[0] * hw[1], 96, requires_grad=True)
        out = module(x, hw)
        scattering = [n for n in _graph_nodes(out.grad_fn) if n.startswith(SCATTERING_NODES)]
        log = _AtenLog()
        with log:
            out.sum().backward()
        accumulating = _accumulating_calls(log.calls)
        assert bool(scattering) == expect_scatter, (backward, scattering)
        assert bool(accumulating) == expect_scatter, (backward, accumulating)


@pytest.mark.parametrize('cls', BACKBONES, ids=lambda c: c.__name__)
def test_deterministic_training_gives_bit_identical_gradients(cls):
    """Under torch.use_deterministic_algorithms(True) (mmengine's randomness=dict(deterministic=True)) a
    training step of the backbone runs, and two runs give the same gradients bit for bit."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = []
        for _ in range(2):
            model = tiny_backbone(cls).train()
            x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
            sum(feature.square().mean() for feature in model(x)).backward()
            runs.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    finally:
        torch.use_deterministic_algorithms(previous)
    assert runs[0].keys() == runs[1].keys() and runs[0]
    for name, grad in runs[0].items():
        assert torch.equal(grad, runs[1][name]), name
