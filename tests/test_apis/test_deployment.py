"""ONNX export and onnxruntime: the clustering identical to the torch clustering (float64 and float32, also
on inputs full of exact ties), both backbones close to eager PyTorch, and tools/deployment/export_onnx.py on
the three demo configs. Needs the ``deploy`` extra (onnx, onnxscript, onnxruntime), which ``make env``
installs; skipped without it."""
import os
import re
import subprocess
import sys

import pytest
import torch

ort = pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

from conftest import (  # noqa: E402
    FLOAT32_MOVED_TOKENS,
    TINY_ARCHS,
    TorchClustering,
    cluster_sets,
    clusters_are_tie_free,
    moved_token_share,
    tie_free_images,
    tie_free_queries,
)

from boat_mm.apis import deployment  # noqa: E402
from boat_mm.models.layers.feature_space_attention import plan_clusters  # noqa: E402

pytestmark = pytest.mark.slow  # trainings, exports, launched processes
from conftest import REPO  # noqa: E402

TOOL = os.path.join(REPO, 'tools', 'deployment', 'export_onnx.py')
# Largest |onnxruntime - pytorch| of the tool's float32 outputs on tie-free weights: rounding only. Measured
# 1.5e-5 (UperNet logits) and ~2e-5 (FPN features, five unnormalised convolutions after the backbone); the
# share beyond 1e-5 is the rounding tail and depends on the CPU (0.02-0.35% measured), so it is not bounded.
# A token in another cluster changes its outputs by the size of the values themselves (0.1-1).
MAX_ROUNDING_DIFF = 1e-3
# Pixels whose two best classes are within rounding of each other may swap: a few per thousand at most (with
# one image the classifier's single argmax must agree).
MIN_ARGMAX_AGREEMENT = 99.9
TINY = TINY_ARCHS


def _run_onnx(path, *inputs):
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    feed = {arg.name: x.numpy() for arg, x in zip(session.get_inputs(), inputs)}
    return [torch.from_numpy(out) for out in session.run(None, feed)]


def _cluster_in_onnxruntime(tmp_path, q):
    path = str(tmp_path / 'clustering.onnx')
    deployment.export_onnx(TorchClustering(q.shape[1]), q, path, ['perm'])
    (perm,) = _run_onnx(path, q)
    return perm


def _queries(num_tokens, dtype, inputs):
    """Random queries, or 'ties': integer entries in [-2, 2], so that many ratios tie exactly and the result
    depends on the exported sort keeping tied tokens in order, as torch's stable sort does (ONNX TopK's
    lower-index tie rule)."""
    torch.manual_seed(0)
    q = torch.randn(4, num_tokens, 16, dtype=dtype)
    return torch.randint(-2, 3, q.shape).to(dtype) if inputs == 'ties' else q


@pytest.mark.parametrize('inputs', ['random', 'ties'])
@pytest.mark.parametrize('num_tokens', [3136, 825], ids=['released', 'padded'])
def test_onnx_clustering_is_the_torch_clustering_in_float64(tmp_path, num_tokens, inputs):
    """float64: the same permutation, slot for slot, in onnxruntime as in the torch clustering."""
    q = _queries(num_tokens, torch.float64, inputs)
    assert torch.equal(_cluster_in_onnxruntime(tmp_path, q), TorchClustering(num_tokens)(q))


@pytest.mark.parametrize('num_tokens', [3136, 825], ids=['released', 'padded'])
def test_onnx_clustering_in_float32_is_the_float64_clustering_on_tie_free_queries(tmp_path, num_tokens):
    """float32 on tie-free queries (tests/conftest.py): onnxruntime and torch both give exactly the clusters
    of float64, whatever the CPU's kernels."""
    q = tie_free_queries(4, num_tokens, 16)
    plan = plan_clusters(num_tokens)
    expected = cluster_sets(TorchClustering(num_tokens)(q.double()), plan)
    assert torch.equal(cluster_sets(_cluster_in_onnxruntime(tmp_path, q), plan), expected)
    assert torch.equal(cluster_sets(TorchClustering(num_tokens)(q), plan), expected)


@pytest.mark.parametrize('inputs', ['random', 'ties'])
@pytest.mark.parametrize('num_tokens', [3136, 825], ids=['released', 'padded'])
def test_onnx_clustering_in_float32_moves_few_tokens(tmp_path, num_tokens, inputs):
    """float32 on arbitrary queries: near-split tokens may change side between the two arithmetics; the share
    of tokens in another cluster stays small (a wrong sort or tie rule moves most of them)."""
    q = _queries(num_tokens, torch.float32, inputs)
    plan = plan_clusters(num_tokens)
    moved = moved_token_share(TorchClustering(num_tokens)(q), _cluster_in_onnxruntime(tmp_path, q), plan)
    print(f'float32 onnxruntime vs torch, {inputs}, N={num_tokens}: {100 * moved:.2f}% of tokens moved')
    assert moved <= FLOAT32_MOVED_TOKENS


def test_onnx_clustering_is_the_torch_clustering_at_512x512_stage1_size(tmp_path):
    """16384 tokens (stage 1 at 512x512, 8 split levels) in float64: identical permutations. (In float32
    at this size different arithmetics disagree on 8-17% of leaf clusters, ONNX vs torch as much as the CPU
    kernel vs torch: centroid sums over 16k tokens round differently and move tokens across split points.)"""
    torch.manual_seed(0)
    q = torch.randn(3, 16384, 32, dtype=torch.float64)
    path = str(tmp_path / 'clustering.onnx')
    deployment.export_onnx(TorchClustering(16384), q, path, ['perm'])
    (perm,) = _run_onnx(path, q)
    assert torch.equal(perm, TorchClustering(16384)(q))


@pytest.mark.parametrize('size', [(224, 224), (97, 131)], ids=['224', '97x131'])
@pytest.mark.parametrize('cls', list(TINY), ids=lambda c: c.__name__)
def test_onnxruntime_backbone_matches_eager(tmp_path, cls, size):
    """Whole backbone in onnxruntime against eager PyTorch (CPU kernel clustering), float32, on a tie-free
    input (tests/conftest.py): no output value moves beyond rtol = atol = 1e-5 (onnxruntime has no float64
    convolution; float64 identity of the clustering is the test above)."""
    torch.manual_seed(0)
    model = cls(arch=TINY[cls]).eval()
    x = tie_free_images(model, (1, 3, *size))
    path = str(tmp_path / 'backbone.onnx')
    deployment.export_onnx(model, x, path, [f'stage{i}' for i in range(4)])
    with torch.no_grad():
        eager = model(x)
    exported = _run_onnx(path, x)
    assert len(exported) == len(eager)
    for expected, got in zip(eager, exported):
        assert got.shape == expected.shape
        assert deployment.moved_share(expected, got) == 0


def _tie_free_seed(config, shape, image, max_seeds=10):
    """The first weight seed of tools/deployment/export_onnx.py (it seeds, then builds the model) whose
    FSLA clusters of ``image``, preprocessed as the tool does, are tie-free."""
    for seed in range(max_seeds):
        torch.manual_seed(seed)
        model, cfg, scope = deployment.build_model(os.path.join(REPO, config))
        module, _ = deployment.exportable(model, scope)
        inputs, _ = deployment.preprocess_image(model, cfg, scope, image, shape)
        if clusters_are_tie_free(module, inputs):
            return seed
    raise RuntimeError(f'no tie-free seed among {max_seeds} for {config}')


def _export_tool(config, shape, out, *extra):
    return subprocess.run([sys.executable, TOOL, config, '--shape', *map(str, shape), '--out', out, *extra],
                          cwd=REPO, capture_output=True, text=True)


def _frame_filling_photo(photo: str, height_over_width: float, path: str) -> str:
    """``photo`` centre-cropped to ``height_over_width``: resized by a keep-ratio pipeline to its scale, it
    fills the frame. A detector's preprocessing otherwise zero-pads it to the size divisor, and the padded
    tokens are identical: exact ties, which no perturbation of the photo reveals (zero stays zero under the
    tie-free rule's relative probes) and which onnxruntime's sort may break otherwise than torch's (measured
    on the Mask R-CNN demo config at seed 3, 2026-12-07: 0.037 apart with the padded photo, 1.8e-05 with this
    crop)."""
    from PIL import Image
    image = Image.open(photo)
    width, height = image.size
    crop_width = round(height / height_over_width)
    left = (width - crop_width) // 2
    image.crop((left, 0, left + crop_width, height)).save(path)
    return path


@pytest.mark.parametrize('config,shape,outputs,photo_aspect', [
    ('configs/demo/cls_boat_swin_imagenet_demo.py', (64, 64), ['logits'], None),
    ('configs/demo/upernet_boat_cswin_ade20k_demo.py', (64, 96), ['seg_logits'], None),
    # the demo test scale (160, 128): a 1.25 (height / width) photo needs no padding to the size divisor
    ('configs/demo/mask-rcnn_boat_swin_coco_demo.py', (96, 128), [f'feat{i}' for i in range(5)], 1.25),
], ids=['classifier', 'upernet', 'mask-rcnn'])
def test_export_tool_on_demo_configs(tmp_path, config, shape, outputs, photo_aspect, grace_hopper):
    """The tool as a user runs it: random weights (said on stderr), export, --verify on a photograph
    through the config's test preprocessing; the file's outputs have the promised names and shapes. The
    weights' --seed is one whose clusters of the photo are tie-free, so that onnxruntime and eager float32
    agree on every CPU (the detector's photo fills its frame: ``_frame_filling_photo``)."""
    import onnx
    out = str(tmp_path / 'model.onnx')
    photo = grace_hopper if photo_aspect is None else _frame_filling_photo(grace_hopper, photo_aspect,
                                                                          str(tmp_path / 'photo.png'))
    seed = _tie_free_seed(config, shape, photo)
    result = _export_tool(config, shape, out, '--verify', photo, '--seed', str(seed))
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'RANDOM WEIGHTS' in result.stderr
    for started in ('building the model of', f'exporting to {out}', f'verifying {out} in onnxruntime'):
        assert re.search(rf'^\[export_onnx\] {re.escape(started)}.*: [\d.]+ s$', result.stderr, re.M), result.stderr
    graph = onnx.load(out, load_external_data=False).graph
    assert [o.name for o in graph.output] == outputs
    input_dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert input_dims == [1, 3, *shape]
    for name in outputs:
        moved = re.search(rf'^{name}: max \|onnxruntime - pytorch\| = (\S+), (\S+)% of values moved', result.stdout,
                          re.M)
        assert moved, result.stdout
        assert float(moved.group(1)) <= MAX_ROUNDING_DIFF, result.stdout
    if 'feat0' not in outputs:
        agreement = re.search(r'argmax over classes agrees on (\S+)%', result.stdout)
        assert agreement and float(agreement.group(1)) >= MIN_ARGMAX_AGREEMENT, result.stdout
    assert re.search(r'latency .*pytorch eager [\d.]+ ms, onnxruntime [\d.]+ ms', result.stdout)


def test_export_tool_refuses_bad_input(tmp_path):
    missing = _export_tool('configs/demo/no_such_config.py', (64, 64), str(tmp_path / 'm.onnx'))
    assert missing.returncode != 0 and 'config not found' in missing.stderr
    bad_shape = _export_tool('configs/demo/cls_boat_swin_imagenet_demo.py', (0, 64), str(tmp_path / 'm.onnx'))
    assert bad_shape.returncode != 0 and '--shape must be positive' in bad_shape.stderr
