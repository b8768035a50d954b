"""Kernel census of one FSLA module: how many device kernels its forward and its backward issue.

On a GPU, an eager FSLA forward is launch-bound when it issues hundreds of small kernels (the torch path:
~415 at N=3136, about 70 per split level). This counts them without a GPU, so that every change is guarded:

* aten ops, through a ``TorchDispatchMode``: every op that is not a view and not a bare allocation is one
  kernel (or a few, for a sort or a GEMM: one call either way, which is what launch overhead scales with);
* Triton launches of ``triton_kernels`` (``LAUNCH_COUNTER``), which aten does not see.

Implementations: ``'torch'`` runs the torch path on the meta device, whose control flow is the GPU's (no CPU
cache chunking, no CPU flash kernels; no data, so any N is instant); ``'triton'`` runs the fused path on CPU
tensors in Triton's interpreter (the process must have started with ``TRITON_INTERPRET=1``), ``dry`` by
default: launches are counted and skipped, which gives the same count because no launch depends on a value
(the tests check a real interpreted run against the dry count).
"""
import os
from collections import Counter
from contextlib import contextmanager
from typing import Dict, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..models.layers import triton_kernels
from ..models.layers.clustering import TORCH, TRITON, plan_clusters
from ..models.layers.feature_space_attention import FeatureSpaceLocalAttention
from ..models.layers.native_clustering import NATIVE_ENV

__all__ = ['count_kernels', 'count_launches', 'fsla_kernel_census', 'KernelCounter', 'CENSUS_TARGETS']

# Issue 32's targets for one FSLA module on the GPU path.
CENSUS_TARGETS = dict(forward=40, backward=30, per_level=4)
# Ops that allocate or re-describe memory without running a kernel (``_unsafe_view`` is a view that its schema
# does not mark as one).
NO_KERNEL_OPS = frozenset({'empty', 'empty_strided', 'empty_like', 'new_empty', 'new_empty_strided', 'lift_fresh',
                           'detach', 'alias', 'set_', 'resize_', '_unsafe_view'})


class KernelCounter(TorchDispatchMode):
    """Counts the kernel-launching aten ops (by name) dispatched while active, except those of the Triton
    interpreter's argument copies during a launch."""

    def __init__(self):
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not func.is_view and name not in NO_KERNEL_OPS and not triton_kernels.LAUNCH_COUNTER.inside:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def count_launches(dry: bool = False) -> Iterator[Counter]:
    """Within the context, the returned Counter collects ``'triton:launch'``: the Triton launches alone (``dry``:
    counted, not run), usable where a dispatch mode cannot be active (torch.compile refuses one: a compiled
    graph's aten ops are its nodes)."""
    counter = triton_kernels.LAUNCH_COUNTER
    saved = counter.active, counter.dry, counter.count
    counter.active, counter.dry, counter.count = True, dry, 0
    result: Counter = Counter()
    try:
        yield result
    finally:
        result['triton:launch'] = counter.count
        counter.active, counter.dry, counter.count = saved


@contextmanager
def count_kernels(dry: bool = False) -> Iterator[Counter]:
    """Within the context, the returned Counter collects aten kernels by name plus ``'triton:launch'`` for the
    Triton launches (when there are any); ``dry`` skips the launches (counted all the same)."""
    ops, launches = KernelCounter(), Counter()
    result: Counter = Counter()
    try:
        with count_launches(dry) as launches, ops:
            yield result
    finally:
        result.update(ops.ops)
        result.update(+launches)  # no 'triton:launch' entry when there was none


@contextmanager
def _implementation(name: str):
    previous = os.environ.get(NATIVE_ENV)
    os.environ[NATIVE_ENV] = '0' if name == TORCH else TRITON
    try:
        yield
    finally:
        if previous is None:
            del os.environ[NATIVE_ENV]
        else:
            os.environ[NATIVE_ENV] = previous


def fsla_kernel_census(num_tokens: int, implementation: str = TRITON, embed_dims: int = 96, num_heads: int = 3,
                       batch: int = 1, dry: bool = True, seed: int = 0) -> Dict[str, object]:
    """Kernels of one FSLA training forward and of its backward at ``num_tokens`` tokens (an H x 1 map).

    Returns ``dict(forward=int, backward=int, levels=K, forward_ops=Counter, backward_ops=Counter)``."""
    if implementation not in (TORCH, TRITON):
        raise ValueError(f"implementation must be '{TORCH}' or '{TRITON}', got {implementation!r}")
    if implementation == TRITON and not triton_kernels.triton_available(torch.device('cpu')):
        raise RuntimeError('the Triton census runs the kernels on CPU tensors: start the process with '
                           'TRITON_INTERPRET=1 (triton >= 3.0)')
    device = torch.device('meta' if implementation == TORCH else 'cpu')
    torch.manual_seed(seed)
    module = FeatureSpaceLocalAttention(embed_dims, num_heads).to(device)
    x = torch.randn(batch, num_tokens, embed_dims, device=device, requires_grad=True)
    hw = (num_tokens, 1)
    plan_clusters(num_tokens, module.cluster_size, module.overlap, device)  # cached, as after a first step
    with _implementation(implementation):
        with count_kernels(dry=dry) as forward_ops:
            out = module(x, hw)
        grad = torch.ones_like(out)
        with count_kernels(dry=dry) as backward_ops:
            out.backward(grad)
    return dict(forward=sum(forward_ops.values()), backward=sum(backward_ops.values()),
                levels=plan_clusters(num_tokens).num_levels, forward_ops=forward_ops, backward_ops=backward_ops)
