"""FSLA: the optimised module against a plain, obviously-correct loop implementation."""
import math
import os

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    FLOAT32_MOVED_TOKENS,
    REPO,
    cluster_sets,
    cpu_fp16,
    leaf_and_borrowed_sets,
    moved_token_share,
    needs_compiler,
    tie_free_images,
    tie_free_queries,
)

from boat_mm.models.layers.feature_space_attention import (
    FeatureSpaceLocalAttention,
    balanced_hierarchical_clustering,
    num_levels_for,
    plan_clusters,
)
from boat_mm.models.layers.native_clustering import native_clustering_available

CLUSTER_SIZE, OVERLAP, ITERS, TEMPERATURE = 49, 20, 2, 100.0


def plain_clusters(q, cluster_size=CLUSTER_SIZE, iters=ITERS, temperature=TEMPERATURE):
    """Balanced hierarchical binary clustering of one head's queries q (N, d), written as plainly as
    possible: a list of (real token ids in current order, pad count) per group, split level by level."""
    n_tokens = q.shape[0]
    levels = 0 if n_tokens <= cluster_size else int(math.floor(math.log2(n_tokens / cluster_size) + .5))
    slots = math.ceil(n_tokens / 2 ** levels)
    groups = [(list(range(n_tokens)), slots * 2 ** levels - n_tokens)]
    for _ in range(levels):
        children = []
        for ids, pads in groups:
            half = (len(ids) + pads) // 2
            centroids = [F.normalize(q[ids[:half]].mean(0), dim=0),
                         F.normalize(q[ids[half:]].mean(0), dim=0)]
            unit = F.normalize(q[ids], dim=1)  # cosine similarity = unit rows @ unit centroid
            for _ in range(iters):
                weight = torch.softmax(unit @ torch.stack(centroids, 1) * temperature, dim=1)
                centroids = [F.normalize((weight[:, j:j + 1] * q[ids]).sum(0), dim=0) for j in (0, 1)]
            ratio = ((unit @ centroids[0] + 1) / (unit @ centroids[1] + 1)).tolist()
            ordered = [ids[j] for j in sorted(range(len(ids)), key=lambda j: ratio[j])]
            pads_a, pads_b = (pads + 1) // 2, pads // 2
            children += [(ordered[:half - pads_a], pads_a), (ordered[half - pads_a:], pads_b)]
        groups = children
    return [ids for ids, _ in groups], slots, levels


def plain_attention(q, k, v, scale, overlap=OVERLAP, **kw):
    """One head: every query attends to its cluster plus the sibling's tokens nearest the split."""
    clusters, slots, levels = plain_clusters(q, **kw)
    out = torch.zeros_like(v)
    borrow = min(overlap, slots - 1) if levels > 0 else 0
    for c, ids in enumerate(clusters):
        sibling = clusters[c ^ 1] if levels > 0 else []
        borrowed = (sibling[:borrow] if c % 2 == 0 else sibling[len(sibling) - borrow:]) if borrow else []
        keys = ids + borrowed
        weights = torch.softmax(q[ids] @ k[keys].T * scale, dim=-1)
        out[ids] = weights @ v[keys]
    return out, clusters


def plain_fsla(module, x, hw):
    b, n, c = x.shape
    h = module.num_heads
    qkv = module.qkv(x).view(b, n, 3, h, c // h)
    out = torch.zeros(b, n, h, c // h, dtype=x.dtype)
    for i in range(b):
        for j in range(h):
            out[i, :, j], _ = plain_attention(qkv[i, :, 0, j], qkv[i, :, 1, j], qkv[i, :, 2, j], module.scale,
                                              overlap=module.overlap, cluster_size=module.cluster_size)
    out = out.reshape(b, n, c)
    v = qkv[:, :, 2].reshape(b, n, c).transpose(1, 2).reshape(b, c, *hw)
    return module.proj(out + module.lepe(v).flatten(2).transpose(1, 2))


def _hw(n):
    """A (H, W) factorisation of n, as square as possible."""
    h = int(math.sqrt(n))
    while n % h:
        h -= 1
    return h, n // h


@pytest.mark.parametrize('native', [True, False], ids=['native', 'torch'])
@pytest.mark.parametrize('n_tokens', [49, 98, 196, 3136, 50, 333, 777, 1000, 3000])
def test_fsla_matches_plain_loop(n_tokens, native, monkeypatch):
    """Both clustering implementations (the fused CPU kernel and the torch one) against the loop."""
    if native and not native_clustering_available(torch.zeros(1, dtype=torch.float64)):
        pytest.skip('no C++ compiler for the fused clustering kernel')
    monkeypatch.setenv('BOAT_MM_NATIVE', '1' if native else '0')
    torch.manual_seed(n_tokens)
    module = FeatureSpaceLocalAttention(embed_dims=24, num_heads=3).double().eval()
    x = torch.randn(3, n_tokens, 24, dtype=torch.float64)
    hw = _hw(n_tokens)
    with torch.no_grad():
        fast = module(x, hw)
        plain = plain_fsla(module, x, hw)
    assert (fast - plain).abs().max().item() < 1e-5


@pytest.mark.parametrize('n_tokens', [49, 50, 98, 333, 1000, 3000, 3136, 5000])
def test_every_token_queried_once_and_cluster_sizes_bounded(n_tokens):
    q = torch.randn(2, n_tokens, 8)
    plan = plan_clusters(n_tokens)
    perm = balanced_hierarchical_clustering(q, plan)
    for row in perm:
        real = row[row < n_tokens]
        assert sorted(real.tolist()) == list(range(n_tokens))
        per_cluster = (row.view(plan.num_clusters, -1) < n_tokens).sum(1)
        if n_tokens <= CLUSTER_SIZE:
            assert plan.num_clusters == 1
        assert per_cluster.min() >= CLUSTER_SIZE / 2 or n_tokens < CLUSTER_SIZE / 2
        assert per_cluster.max() <= 2 * CLUSTER_SIZE


def test_power_of_two_counts_use_the_released_layout():
    for levels in range(7):
        plan = plan_clusters(CLUSTER_SIZE * 2 ** levels)
        assert plan.num_levels == levels and not plan.has_padding
        assert plan.slots_per_cluster == CLUSTER_SIZE
    assert num_levels_for(49, 49) == 0 and num_levels_for(30, 49) == 0


def test_pad_slot_content_never_reaches_real_tokens():
    """Whatever the internal pad slots hold, the clusters of the real tokens are the same, and the
    attention never reads a pad slot (it is masked as a key)."""
    n_tokens = 1000
    plan = plan_clusters(n_tokens)
    assert plan.has_padding
    torch.manual_seed(0)
    q = torch.randn(2, n_tokens, 8)
    perm = balanced_hierarchical_clustering(q, plan)
    garbage = torch.cat([q, 1e4 * torch.randn(2, plan.num_slots - n_tokens, 8)], dim=1)
    assert torch.equal(balanced_hierarchical_clustering(garbage, plan), perm)
    # Pad slots are never keys: every valid key index points at a real token.
    for row in perm:
        keys = row[plan.key_index][plan.key_valid]
        assert (keys < n_tokens).all()


def test_images_in_a_batch_are_independent():
    """Batched and alone run different kernel shapes (two arithmetics): float64, within 1e-12. Changing
    one image leaves the others' outputs exactly as they were (same shapes, same arithmetic)."""
    torch.manual_seed(0)
    module = FeatureSpaceLocalAttention(32, 2).double().eval()
    x = torch.randn(3, 333, 32, dtype=torch.float64)
    with torch.no_grad():
        batched = module(x, (9, 37))
        alone = module(x[1:2], (9, 37))
        x_changed = x.clone()
        x_changed[0] = 100 * torch.randn(333, 32, dtype=torch.float64)
        changed = module(x_changed, (9, 37))
    torch.testing.assert_close(batched[1:2], alone, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(changed[1:], batched[1:], rtol=0, atol=0)


def test_constant_input_is_finite_and_deterministic():
    module = FeatureSpaceLocalAttention(32, 2).eval()
    x = torch.ones(2, 3136, 32)
    with torch.no_grad():
        a, b = module(x, (56, 56)), module(x, (56, 56))
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)


def test_clustering_carries_no_gradient_but_attention_does():
    module = FeatureSpaceLocalAttention(16, 2)
    x = torch.randn(2, 196, 16, requires_grad=True)
    module(x, (14, 14)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in module.parameters())


@pytest.mark.parametrize('kwargs, match', [(dict(cluster_size=1), 'cluster_size'),
                                           (dict(overlap=-1), 'overlap'),
                                           (dict(temperature=0), 'temperature'),
                                           (dict(num_heads=5), 'divisible')])
def test_bad_arguments_raise(kwargs, match):
    args = dict(embed_dims=32, num_heads=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        FeatureSpaceLocalAttention(**args)


def test_cache_chunked_deep_levels_give_identical_clusters(monkeypatch):
    """Large inputs finish the deep levels chunk by chunk; the clusters must not change."""
    import boat_mm.models.layers.clustering as fsla
    torch.manual_seed(0)
    for n_tokens in (3136, 3000):
        q = torch.randn(4, n_tokens, 16, dtype=torch.float64)
        plan = plan_clusters(n_tokens)
        whole = balanced_hierarchical_clustering(q, plan, use_native=False)
        monkeypatch.setattr(fsla, 'CACHE_CHUNK_ELEMENTS', 2000)  # forces split level > 0, many chunks
        chunked = balanced_hierarchical_clustering(q, plan, use_native=False)
        monkeypatch.undo()
        assert torch.equal(whole, chunked)


def test_stable_argsort_matches_a_stable_sort_with_ties_and_signs():
    from boat_mm.models.layers.feature_space_attention import stable_argsort
    torch.manual_seed(0)
    keys = torch.randn(4, 3, 500).round(decimals=1)  # many ties
    keys[0, 0, :5] = torch.tensor([float('inf'), -0.0, 0.0, -1e-30, 1e-30])
    expected = torch.sort(keys, dim=-1, stable=True).indices
    assert torch.equal(stable_argsort(keys), expected)
    assert torch.equal(stable_argsort(keys.double()), expected)


needs_native = pytest.mark.skipif(not native_clustering_available(torch.zeros(1)),
                                  reason='no C++ compiler for the fused clustering kernel')


@needs_native
@pytest.mark.parametrize('n_tokens', [49, 50, 98, 333, 1000, 3000, 3136, 5000])
def test_native_kernel_gives_the_torch_clusters_in_float64(n_tokens):
    """Two arithmetics (the C++ kernel, torch ops) in float64: the same clusters and borrowed keys."""
    torch.manual_seed(n_tokens)
    q = torch.randn(5, n_tokens, 24, dtype=torch.float64)
    plan = plan_clusters(n_tokens)
    native = balanced_hierarchical_clustering(q, plan, use_native=True)
    reference = balanced_hierarchical_clustering(q, plan, use_native=False)
    assert torch.equal(cluster_sets(native, plan), cluster_sets(reference, plan))


@needs_native
@pytest.mark.parametrize('n_tokens', [50, 333, 1000, 3136, 5000])
def test_native_kernel_in_float32_is_the_float64_clustering_on_tie_free_queries(n_tokens):
    """float32 on tie-free queries (tests/conftest.py): the kernel and the torch path both give exactly the
    float64 clusters, whatever the CPU's vector units."""
    q = tie_free_queries(3, n_tokens, 24, seed=n_tokens)
    plan = plan_clusters(n_tokens)
    expected = cluster_sets(balanced_hierarchical_clustering(q.double(), plan, use_native=False), plan)
    assert torch.equal(cluster_sets(balanced_hierarchical_clustering(q, plan, use_native=True), plan), expected)
    assert torch.equal(cluster_sets(balanced_hierarchical_clustering(q, plan, use_native=False), plan), expected)


@needs_native
@pytest.mark.parametrize('n_tokens', [333, 3136, 5000])
def test_native_kernel_in_float32_moves_few_tokens(n_tokens):
    """float32 on arbitrary queries: a near-split token may change side between the kernel and torch ops;
    the share of tokens in another cluster stays small."""
    torch.manual_seed(n_tokens)
    q = torch.randn(5, n_tokens, 24)
    plan = plan_clusters(n_tokens)
    moved = moved_token_share(balanced_hierarchical_clustering(q, plan, use_native=False),
                              balanced_hierarchical_clustering(q, plan, use_native=True), plan)
    print(f'float32 kernel vs torch, N={n_tokens}: {100 * moved:.2f}% of tokens moved')
    assert moved <= FLOAT32_MOVED_TOKENS


@needs_native
@pytest.mark.parametrize('n_tokens', [3136, 1000])
def test_native_kernel_breaks_exact_ties_by_token_index(n_tokens):
    """Identical queries tie at every level; the stable order then keeps raster order, so the leaves
    are consecutive runs of tokens. (The torch implementation cannot promise this: a batched matmul
    may round identical columns differently depending on their position.)"""
    q = torch.randn(1, 1, 16).expand(3, n_tokens, 16).contiguous()
    plan = plan_clusters(n_tokens)
    perm = balanced_hierarchical_clustering(q, plan, use_native=True)
    leaves, _ = leaf_and_borrowed_sets(perm, plan)
    slots = plan.slots_per_cluster
    expected = torch.arange(plan.num_slots).view(plan.num_clusters, slots)
    if plan.has_padding:  # pads (ids >= N) go last in each group; compare the real tokens' runs
        real = leaves[0][leaves[0] < n_tokens]
        assert torch.equal(real, torch.arange(n_tokens))
    else:
        assert torch.equal(leaves[0], expected)
    assert torch.equal(leaves[0], leaves[2])


@pytest.mark.parametrize('use_native', [False, pytest.param(True, marks=needs_native)], ids=['torch', 'native'])
@pytest.mark.parametrize('pad_value', [math.nan, math.inf, -1e30])
def test_pre_padded_rows_are_ignored_whatever_they_hold(use_native, pad_value):
    """Pre-padded queries whose pad rows hold NaN / inf / huge values cluster exactly as the unpadded ones,
    in the torch path (the GPU path: pads weighted by 0 in centroid sums, and 0 * NaN is NaN) and natively."""
    n_tokens = 1000
    plan = plan_clusters(n_tokens)
    torch.manual_seed(1)
    q = torch.randn(3, n_tokens, 8)
    expected = balanced_hierarchical_clustering(q, plan, use_native=use_native)
    padded = torch.cat([q, torch.full((3, plan.num_slots - n_tokens, 8), pad_value)], dim=1)
    assert torch.equal(balanced_hierarchical_clustering(padded, plan, use_native=use_native), expected)
    assert torch.isnan(padded).any() == math.isnan(pad_value)  # the caller's tensor is left as it was


def test_native_kernel_can_be_switched_off(monkeypatch):
    monkeypatch.setenv('BOAT_MM_NATIVE', '0')
    assert not native_clustering_available(torch.zeros(1))


def _run_with_kernel_cache(script, cache_dir, timeout, **env):
    """Run a Python ``script`` in a fresh process with the kernel switched on, its build cache in ``cache_dir``
    (so the kernel is built there anew) and the extra environment ``env``."""
    import subprocess
    import sys
    env = dict(os.environ, BOAT_MM_CACHE=str(cache_dir), BOAT_MM_NATIVE='1', **env)
    return subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, env=env, timeout=timeout)


def test_unbuildable_native_kernel_falls_back_with_a_warning(tmp_path):
    """No working compiler: one warning, and FSLA still runs (torch clustering)."""
    script = (
        'import sys, warnings, torch\n'
        f'sys.path.insert(0, {REPO!r})\n'
        'from boat_mm.models.layers.feature_space_attention import FeatureSpaceLocalAttention\n'
        'with warnings.catch_warnings(record=True) as caught:\n'
        '    warnings.simplefilter("always")\n'
        '    out = FeatureSpaceLocalAttention(16, 2)(torch.randn(1, 196, 16), (14, 14))\n'
        'print(tuple(out.shape), [str(w.message)[:60] for w in caught])\n')
    result = _run_with_kernel_cache(script, tmp_path, timeout=120, CXX='/bin/false')
    assert result.returncode == 0, result.stderr[-2000:]
    assert '(1, 196, 16)' in result.stdout
    assert 'fused CPU clustering kernel could not be built' in result.stdout


class OnMap(torch.nn.Module):
    """An FSLA module applied to tokens of a fixed (H, W) map: a one-argument model for tie_free_images."""

    def __init__(self, module, hw_shape):
        super().__init__()
        self.module, self.hw_shape = module, hw_shape

    def forward(self, x):
        return self.module(x, self.hw_shape)


@needs_native
@pytest.mark.slow
def test_kernel_built_for_an_older_cpu_gives_the_same_clusters(tmp_path):
    """BOAT_MM_NATIVE_MARCH=x86-64-v2 builds the kernel as for a CPU with SSE4.2 only (no AVX): float64
    clusters identical to the torch path's, float32 on tie-free queries identical to float64's."""
    script = (
        'import sys, torch\n'
        f'sys.path[:0] = [{REPO!r}, {os.path.join(REPO, "tests")!r}]\n'
        'from conftest import cluster_sets, tie_free_queries\n'
        'from boat_mm.models.layers import native_clustering\n'
        'from boat_mm.models.layers.feature_space_attention import plan_clusters\n'
        'from boat_mm.models.layers.feature_space_attention import balanced_hierarchical_clustering as cluster\n'
        'print(native_clustering.compile_flags()[0])\n'
        'plan = plan_clusters(1000)\n'
        'q = tie_free_queries(3, 1000, 24, seed=7)\n'
        'for x in (torch.randn(3, 1000, 24, dtype=torch.float64), q):\n'
        '    got = cluster_sets(cluster(x, plan, use_native=True), plan)\n'
        '    print(torch.equal(got, cluster_sets(cluster(x.double(), plan, use_native=False), plan)))\n')
    result = _run_with_kernel_cache(script, tmp_path, timeout=300, BOAT_MM_NATIVE_MARCH='x86-64-v2')
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ['-march=x86-64-v2', 'True', 'True'], result.stdout
    assert list((tmp_path / 'native').glob('*.so'))  # built anew, for that target


@needs_native
@needs_compiler
def test_torch_compile_takes_the_torch_clustering_in_one_graph():
    """Under torch.compile the ctypes kernel is never traced (it crashed the process when it was): the
    torch clustering runs inside the graph, with no break (fullgraph), and matches eager (the kernel)."""
    torch.manual_seed(0)
    module = FeatureSpaceLocalAttention(32, 2).eval()
    x = tie_free_images(OnMap(module, (14, 14)), (2, 196, 32))  # compiled vs the kernel: two arithmetics
    torch._dynamo.reset()
    with torch.no_grad():
        eager = module(x, (14, 14))
        compiled = torch.compile(module, fullgraph=True, backend='aot_eager')(x, (14, 14))
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('dtype', [pytest.param(torch.bfloat16, id='bf16'), cpu_fp16])
def test_torch_clustering_is_made_in_fp32_under_autocast(dtype):
    """Autocast turns matmuls into bf16 / fp16; the cosines that decide the clusters must stay fp32 (the
    torch implementation is the GPU path, where AMP training runs). Same clusters with and without it."""
    torch.manual_seed(0)
    q = torch.randn(6, 825, 16)
    plan = plan_clusters(825)
    expected = balanced_hierarchical_clustering(q, plan, use_native=False)
    with torch.autocast('cpu', dtype=dtype):
        got = balanced_hierarchical_clustering(q, plan, use_native=False)
        from_low_precision_q = balanced_hierarchical_clustering(q.to(dtype), plan, use_native=False)
    assert torch.equal(got, expected)
    assert torch.equal(from_low_precision_q, balanced_hierarchical_clustering(q.to(dtype).float(), plan,
                                                                              use_native=False))


def test_caches_are_bounded_by_bytes_under_multi_scale_inputs():
    """Multi-scale training sees a new input size every few iterations: the plan and window-mask caches keep
    the most recent ones within their byte budgets (plus at most the newest entry), not one per size ever
    seen; a hit returns the very same object."""
    from boat_mm.models.backbones import boat_swin
    from boat_mm.models.layers import feature_space_attention as fsa
    from boat_mm.models.layers import tensor_bytes
    fsa.plan_clusters.cache_clear()
    boat_swin._window_mask.cache_clear()
    plan_sizes, mask_sizes = [], []
    for short_side in range(480, 801, 16):  # mmdet's 3x multi-scale range, stage 1 of a 1333-wide image
        height, width = short_side // 4, 1333 // 4
        plan = fsa.plan_clusters(height * width)
        mask = boat_swin._window_mask(height, width, 7, 3, torch.device('cpu'))
        plan_sizes.append(tensor_bytes(plan))
        mask_sizes.append(tensor_bytes(mask))
        assert fsa.plan_clusters(height * width) is plan
    plans, masks = fsa.plan_clusters.cache_info(), boat_swin._window_mask.cache_info()
    assert sum(plan_sizes) > fsa.PLAN_CACHE_BYTES and sum(mask_sizes) > boat_swin.WINDOW_MASK_CACHE_BYTES
    assert plans.bytes <= fsa.PLAN_CACHE_BYTES + max(plan_sizes) and plans.currsize < len(plan_sizes)
    assert masks.bytes <= boat_swin.WINDOW_MASK_CACHE_BYTES + max(mask_sizes) and masks.currsize < len(mask_sizes)
    assert plans.hits == len(plan_sizes)


def test_byte_bounded_cache_evicts_least_recently_used_first():
    from boat_mm.models.layers import cache_outside_tracing

    @cache_outside_tracing(maxsize=10, max_bytes=1300)  # room for three of these
    def make(n):
        return torch.zeros(n, dtype=torch.float32)  # n * 4 bytes
    first = make(100)
    make(100 + 1), make(100 + 2)
    assert make(100) is first  # a hit makes it the most recent
    make(100 + 3)  # 4 entries, 1624 > 1300 bytes: the least recently used (101) goes
    info = make.cache_info()
    assert info.currsize == 3 and info.bytes == 4 * (100 + 102 + 103)
    assert make(100) is first and make(101) is not None and make.cache_info().misses == 5
    big = make(1000)  # alone over the budget: kept (the newest always is), everything else evicted
    assert make.cache_info().currsize == 1 and make(1000) is big
