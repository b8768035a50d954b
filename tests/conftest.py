"""Test isolation: each test starts with the mmengine default scope it found (none, normally).

``init_default_scope`` and the Runner set a process-wide default scope, and a backbone built without
``out_indices`` follows the scope's toolbox (mmpretrain: last stage only), so a scope left behind by one
test would change what the next one builds."""
import os
import os.path as osp

import pytest
import torch

# Without a GPU, the Triton kernels run on CPU tensors in Triton's interpreter, which triton chooses when it is
# imported (also for its own library functions): set before anything imports triton (boat_mm does).
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

from mmengine.registry import DefaultScope  # noqa: E402

from boat_mm import BOATCSWinTransformer, BOATSwinTransformer  # noqa: E402
from boat_mm.utils.torch_features import TORCH_VERSION  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))  # the repository root, for every test module


def _cpu_autocast_supports(dtype) -> bool:
    try:
        with torch.autocast('cpu', dtype=dtype):
            return True
    except RuntimeError:  # torch < 2.2: "AutocastCPU only support Bfloat16"
        return False


# Features of a newer torch than the floor (2.1), for tests that exercise them: they skip with the reason.
# torch.compile / torch.export of BOAT: passes on torch 2.11 (the GPU check's rehearsal), 2.14.1 and 2.15.0;
# on 2.1.2 dynamo cannot trace the clustering (an int64 xor on a FakeTensor). Versions between are untested.
COMPILER_VERIFIED_FROM = (2, 11)
needs_compiler = pytest.mark.skipif(
    TORCH_VERSION < COMPILER_VERIFIED_FROM,
    reason=f'torch.compile / torch.export of BOAT verified from torch {"%d.%d" % COMPILER_VERIFIED_FROM}; '
           f'this is {torch.__version__}')
cpu_fp16 = pytest.param(torch.float16, id='fp16', marks=pytest.mark.skipif(
    not _cpu_autocast_supports(torch.float16), reason=f'torch {torch.__version__}: no float16 autocast on the CPU'))

# Tiny architectures of both backbones (same stage structure as released, widths of 16): the shared test models.
TINY_ARCHS = {
    BOATSwinTransformer: dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)),
    BOATCSWinTransformer: dict(embed_dims=16, depths=(1, 2, 2, 1), num_heads=(2, 2, 4, 4), split_sizes=(1, 2, 7, 7)),
}
BACKBONES = list(TINY_ARCHS)


def tiny_arch(cls, embed_dims: int = 16) -> dict:
    """The tiny architecture of ``cls``, optionally wider (heads unchanged)."""
    return dict(TINY_ARCHS[cls], embed_dims=embed_dims)


def tiny_backbone(cls, **kwargs):
    """A tiny ``cls`` with a seeded fresh initialisation (``kwargs``: any backbone argument)."""
    torch.manual_seed(0)
    model = cls(arch=TINY_ARCHS[cls], **kwargs)
    model.init_weights()
    return model


class OsSystemPayload:
    """Pickles to a call of ``os.system`` that touches ``marker``: loading it must not run anything."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


class TorchClustering(torch.nn.Module):
    """The torch clustering (the GPU path) as a module for ``num_tokens`` tokens: what torch.export and the
    ONNX exporter trace in the export tests."""

    def __init__(self, num_tokens: int):
        super().__init__()
        from boat_mm.models.layers.feature_space_attention import plan_clusters
        self.plan = plan_clusters(num_tokens)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        from boat_mm.models.layers.feature_space_attention import balanced_hierarchical_clustering
        return balanced_hierarchical_clustering(q, self.plan, use_native=False)


# Comparing two arithmetics: the rule and helpers live in boat_mm.testing (the GPU check uses them too).
from boat_mm.testing.arithmetic import (  # noqa: E402,F401
    FLOAT32_MOVED_TOKENS,
    TIE_MARGIN,
    TIE_PROBES,
    cluster_sets,
    clustering_withstands,
    clusters_are_tie_free,
    fsla_cluster_sets,
    leaf_and_borrowed_sets,
    moved_token_share,
    tie_free_images,
    tie_free_queries,
)


def pytest_collection_modifyitems(config, items):
    """``cuda`` tests skip without a CUDA device (``pytest tests -m cuda`` on a GPU machine)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA device')
    for item in items:
        if 'cuda' in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def restore_default_scope():
    saved = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict = type(DefaultScope._instance_dict)(saved)


@pytest.fixture
def grace_hopper() -> str:
    """A real photograph (512x600 RGB JPEG) that matplotlib ships: test images without downloads."""
    import os.path as osp

    import matplotlib
    return osp.join(matplotlib.get_data_path(), 'sample_data', 'grace_hopper.jpg')
