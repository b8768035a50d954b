"""Comparing two arithmetics of BOAT's clustering: what the tests and the GPU check share.

Two implementations (the CPU kernel and the torch path, onnxruntime, compiled code, a GPU) give the same
clusters in float64; in float32 a token within rounding of a split point may land on either side. This module
holds the rule by which the project judges float32 (``TIE_MARGIN``, ``FLOAT32_MOVED_TOKENS``), the inputs
that are tie-free under it, and the comparisons (``cluster_sets``, ``moved_token_share``).
"""
import copy

import torch

from ..models.layers.feature_space_attention import (
    FeatureSpaceLocalAttention,
    balanced_hierarchical_clustering,
    plan_clusters,
)

__all__ = ['TIE_MARGIN', 'TIE_PROBES', 'FLOAT32_MOVED_TOKENS', 'leaf_and_borrowed_sets', 'cluster_sets',
           'clustering_withstands', 'tie_free_queries', 'fsla_cluster_sets', 'clusters_are_tie_free',
           'tie_free_images', 'moved_token_share']

# In float64 two arithmetics give the same clusters: tests assert that exactly. In float32 a token within
# rounding of a split point may land on either side, and which side depends on the CPU's kernels (AVX2 vs
# AVX-512, oneDNN vs MLAS summation order), so float32 is judged in two ways: on *tie-free* inputs, whose
# clusters withstand a perturbation far larger than float32 rounding, both arithmetics must give exactly the
# float64 clusters; on arbitrary inputs only the share of tokens that changed cluster is bounded.
# The margin: a float32 sum of n terms is off by ~sqrt(n) * 6e-8 relative (2.4e-6 for a 3136-token centroid
# summed one by one), so 3e-5 is >10x that at stage-1 sizes; 22% of random 3136-token rows (d=16) and 78% of
# 825-token rows are tie-free at this margin, none at 1e-4 (measured).
TIE_MARGIN = 3e-5
TIE_PROBES = 3  # random perturbations tried per candidate
# Bound on the share of tokens that change leaf cluster between two float32 arithmetics on arbitrary inputs.
# One near-split token that changes side moves the centroids below it, so a flip can carry a third of its
# row along: perturbing float64 queries by 1e-6 relative (a few float32 roundings) moved at most 7.4% of the
# tokens of 5 rows (N=5000, 8 draws; usually none), while a wrong sort direction moves nearly all of them.
FLOAT32_MOVED_TOKENS = 0.25


def leaf_and_borrowed_sets(perm: torch.Tensor, plan):
    """Per row of perm (rows, M): every leaf cluster's tokens (rows, clusters, s) and the keys it borrows from
    its sibling (rows, clusters, overlap), each sorted: all that the attention output depends on."""
    slots = plan.slots_per_cluster
    leaves = perm.view(perm.shape[0], plan.num_clusters, slots).sort(-1).values
    borrowed = perm[:, plan.key_index[:, slots:].reshape(-1)].view(perm.shape[0], plan.num_clusters, -1)
    return leaves, borrowed.sort(-1).values


def cluster_sets(perm: torch.Tensor, plan) -> torch.Tensor:
    """``leaf_and_borrowed_sets`` flattened into one (rows, ...) tensor, to compare clusterings row by row."""
    leaves, borrowed = leaf_and_borrowed_sets(perm, plan)
    return torch.cat([leaves.flatten(1), borrowed.flatten(1)], dim=1)


def _perturbed(x: torch.Tensor, margin: float, generator: torch.Generator) -> torch.Tensor:
    """x with every entry scaled by 1 +- margin (random signs)."""
    signs = torch.randint(0, 2, x.shape, generator=generator, dtype=x.dtype) * 2 - 1
    return x * (1 + margin * signs)


def clustering_withstands(q: torch.Tensor, num_tokens: int, margin: float = TIE_MARGIN) -> torch.Tensor:
    """Per row of q (rows, N, d): True when the float64 torch clustering of the row gives the same clusters
    (``cluster_sets``) under ``TIE_PROBES`` random relative perturbations of size ``margin``."""
    plan = plan_clusters(num_tokens)
    q64 = q.double()
    generator = torch.Generator().manual_seed(12345)
    reference = cluster_sets(balanced_hierarchical_clustering(q64, plan, use_native=False), plan)
    same = torch.ones(q.shape[0], dtype=torch.bool)
    for _ in range(TIE_PROBES):
        probe = balanced_hierarchical_clustering(_perturbed(q64, margin, generator), plan, use_native=False)
        same &= (cluster_sets(probe, plan) == reference).all(dim=1)
    return same


def tie_free_queries(rows: int, num_tokens: int, dims: int, seed: int = 0, max_candidates: int = 400):
    """``rows`` random float32 query rows (rows, N, d) whose clusters are tie-free (``clustering_withstands``):
    drawn from a seeded stream of candidates, the ones near a tie left out."""
    generator = torch.Generator().manual_seed(seed)
    kept, drawn = [], 0
    while len(kept) < rows:
        if drawn >= max_candidates:
            raise RuntimeError(f'only {len(kept)} of {max_candidates} random rows of {num_tokens} tokens are '
                               f'tie-free at margin {TIE_MARGIN}; lower the margin or the size')
        batch = torch.randn(16, num_tokens, dims, generator=generator)
        drawn += len(batch)
        kept += list(batch[clustering_withstands(batch, num_tokens)])
    return torch.stack(kept[:rows])


def fsla_cluster_sets(model: torch.nn.Module, x: torch.Tensor) -> list:
    """``cluster_sets`` of every FSLA module of ``model`` for input ``x`` (no gradient)."""
    modules = [m for m in model.modules() if isinstance(m, FeatureSpaceLocalAttention)]
    for module in modules:
        module.record_clusters = True
    try:
        with torch.no_grad():
            model(x)
        records = [module.last_clusters for module in modules]
        return [cluster_sets(r['perm'].flatten(0, 1), r['plan']) for r in records]
    finally:
        for module in modules:
            module.record_clusters, module.last_clusters = False, None


def clusters_are_tie_free(model: torch.nn.Module, x: torch.Tensor, seed: int = 0) -> bool:
    """True when every FSLA clustering of ``model`` on ``x`` is tie-free: the float64 model's clusters withstand
    ``TIE_PROBES`` random relative perturbations of the input of size ``TIE_MARGIN``."""
    model64 = copy.deepcopy(model).cpu().double().eval()  # decided on the CPU: the same on every machine
    generator = torch.Generator().manual_seed(seed)
    x64 = x.cpu().double()
    reference = fsla_cluster_sets(model64, x64)
    for _ in range(TIE_PROBES):
        probe = fsla_cluster_sets(model64, _perturbed(x64, TIE_MARGIN, generator))
        if not all(torch.equal(a, b) for a, b in zip(reference, probe)):
            return False
    return True


def tie_free_images(model: torch.nn.Module, shape, seed: int = 0, max_candidates: int = 40) -> torch.Tensor:
    """A random float32 image batch of ``shape`` (from a seeded stream of candidates) on which every FSLA
    clustering of ``model`` is tie-free (``clusters_are_tie_free``)."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(max_candidates):
        x = torch.randn(*shape, generator=generator)
        if clusters_are_tie_free(model, x):
            return x
    raise RuntimeError(f'no tie-free input of shape {tuple(shape)} in {max_candidates} candidates')


def moved_token_share(perm: torch.Tensor, other: torch.Tensor, plan) -> float:
    """Share of real tokens that sit in a different leaf cluster in ``other`` than in ``perm`` (rows, M):
    what float32 near-ties change between two arithmetics."""
    def cluster_of(p):
        cluster = torch.empty_like(p)
        cluster.scatter_(1, p, torch.arange(p.shape[1], device=p.device).expand_as(p) // plan.slots_per_cluster)
        return cluster[:, :plan.num_tokens]
    return float((cluster_of(perm) != cluster_of(other)).float().mean())
