"""Export OpenMMLab models with BOAT backbones to ONNX and check the file in onnxruntime.

What is exported, per toolbox (the config's ``default_scope``):
- mmpretrain classifiers: the class logits, ``head(extract_feat(x))``;
- mmseg segmentors: the segmentation logits of the whole segmentor (decode head), bilinearly resized to the
  input size as ``EncoderDecoder.encode_decode`` does; argmax over classes gives the predicted map;
- mmdet detectors: the backbone + neck features (``extract_feat``), one output per FPN level. The whole
  detector (RPN, RoI heads, NMS) is mmdeploy's job; see docs/deployment.md for what happened when we tried it.

The ONNX input is the image *after* the config's data preprocessor (normalised, NCHW float32); shapes are
static per export because the FSLA cluster plan depends on the token count. Export goes through
``torch.onnx.export(dynamo=True)`` (``torch.export`` + onnxscript): traced FSLA takes the torch clustering,
whose stable sort becomes ONNX ``TopK`` over the whole axis, which breaks ties by the lower index, i.e. is a
stable sort by definition (see ``stable_argsort``).

onnx, onnxscript and onnxruntime are optional (``pip install boat_mm[deploy]``); only this module needs them.
"""
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..analysis.timing import median_seconds
from ..utils.datasets import model_inputs_of_image
from ..utils.model_builder import build_model as build_single_process_model
from ..utils.model_builder import config_scope
from ..utils.torch_features import ONNX_EXPORT, require_torch

__all__ = ['require_deploy_packages', 'export_onnx', 'ClassifierLogits', 'SegmentorLogits', 'DetectorFeatures',
           'ExportTask', 'build_model', 'exportable', 'preprocess_image', 'moved_share', 'Verification', 'verify_onnx']

# Opset 18: the lowest the dynamo exporter targets natively, read by onnxruntime >= 1.14 and TensorRT >= 8.6.
DEFAULT_OPSET = 18
INPUT_NAME = 'input'
# Latency: median over this many timed runs after one warm-up run (a single image, batch 1).
DEFAULT_TIMED_RUNS = 5
# fp32 outputs of two arithmetics are judged by the share of values that moved: |a - b| > tol * (1 + |a|),
# torch.allclose's test with rtol = atol = tol (FPN features are not normalised: an absolute bound alone
# would count rounding of large values as moves).
MOVED_TOLERANCE = 1e-5


def require_deploy_packages() -> None:
    """Raise an ImportError that names the extra when onnx / onnxscript / onnxruntime are missing."""
    missing = []
    for name in ('onnx', 'onnxscript', 'onnxruntime'):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(f'ONNX export needs {", ".join(missing)}: pip install "boat_mm[deploy]" '
                          '(or pip install onnx onnxscript onnxruntime)')


def export_onnx(module: nn.Module, example: torch.Tensor, path: str, output_names: Sequence[str],
                opset: int = DEFAULT_OPSET, verbose: bool = False) -> None:
    """Export ``module(example)`` to ``path`` (static shapes) and check the file with ``onnx.checker``;
    ``verbose`` shows the exporter's own step messages."""
    require_torch(ONNX_EXPORT)
    require_deploy_packages()
    import onnx
    import onnxscript.optimizer
    module.eval()
    with torch.no_grad():
        program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset,
                                    optimize=False,
                                    input_names=[INPUT_NAME], output_names=list(output_names), verbose=verbose)
    # Constant folding and dead-node removal only: the exporter's full optimizer adds pattern rewrites that
    # took half of the export time (81 of 152 s for a small BOAT-CSWin) and did not change onnxruntime's
    # latency, which optimises the graph itself on loading.
    onnxscript.optimizer.fold_constants(program.model)
    onnxscript.optimizer.remove_unused_nodes(program.model)
    program.save(path)
    onnx.checker.check_model(path, full_check=True)


class ClassifierLogits(nn.Module):
    """mmpretrain ImageClassifier -> class logits (B, num_classes)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model.head(self.model.extract_feat(inputs))


class SegmentorLogits(nn.Module):
    """mmseg EncoderDecoder -> segmentation logits (B, num_classes, H, W) at the input size."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        head = self.model.decode_head
        logits = head(self.model.extract_feat(inputs))
        return F.interpolate(logits, size=inputs.shape[2:], mode='bilinear', align_corners=head.align_corners)


class DetectorFeatures(nn.Module):
    """mmdet detector -> backbone + neck features, a tuple with one (B, C, H/s, W/s) map per level."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(self.model.extract_feat(inputs))


@dataclass
class ExportTask:
    """What a toolbox's model becomes in ONNX: the wrapper that gives its outputs, and their names."""
    wrapper: Callable[[nn.Module], nn.Module]
    describe: str

    def output_names(self, module: nn.Module, example: torch.Tensor) -> List[str]:
        with torch.no_grad():
            outputs = module(example)
        if isinstance(outputs, torch.Tensor):
            return [self.describe]
        return [f'{self.describe}{level}' for level in range(len(outputs))]


TASKS = {
    'mmpretrain': ExportTask(ClassifierLogits, 'logits'),
    'mmseg': ExportTask(SegmentorLogits, 'seg_logits'),
    'mmdet': ExportTask(DetectorFeatures, 'feat'),
}


def build_model(config: str, checkpoint: Optional[str] = None) -> Tuple[nn.Module, object, str]:
    """(model in eval mode on CPU, cfg, scope) from a config and optional checkpoint (random weights without),
    built the one single-process way (``boat_mm.utils.model_builder.build_model``)."""
    cfg, model = build_single_process_model(config, checkpoint)
    return model, cfg, config_scope(cfg, config)


def exportable(model: nn.Module, scope: str) -> Tuple[nn.Module, ExportTask]:
    """The module to export for a toolbox model (see module docstring), in eval mode."""
    task = TASKS[scope]
    return task.wrapper(model).eval(), task


def preprocess_image(model: nn.Module, cfg, scope: str, image: str, shape: Tuple[int, int]
                     ) -> Tuple[torch.Tensor, Optional[str]]:
    """The ONNX input for ``image``: the config's test pipeline (annotation loading left out), then the
    model's data preprocessor; resized bilinearly to the export ``shape`` if the pipeline gave another size
    (static shapes). Returns (input (1, 3, H, W), a note saying what was resized, or None)."""
    inputs, _ = model_inputs_of_image(model, cfg, scope, image)
    note = None
    if tuple(inputs.shape[2:]) != tuple(shape):
        note = (f'test preprocessing gave {tuple(inputs.shape[2:])}; resized to the export shape '
                f'{tuple(shape)}')
        inputs = F.interpolate(inputs, size=tuple(shape), mode='bilinear', align_corners=False)
    return inputs, note


def moved_share(expected: torch.Tensor, got: torch.Tensor, tolerance: float = MOVED_TOLERANCE) -> float:
    """Share of values of ``got`` not within ``tolerance * (1 + |expected|)`` of ``expected``."""
    return float(((expected - got).abs() > tolerance * (1 + expected.abs())).float().mean())


@dataclass
class Verification:
    """PyTorch eager against onnxruntime on one input: per output max |difference| and the share of values
    that moved more than ``MOVED_TOLERANCE``; both latencies (median seconds); for classifier and segmentor
    logits, the share of argmax decisions (class, pixel label) that agree."""
    names: List[str]
    max_abs_diff: List[float]
    moved_share: List[float]
    argmax_agreement: Optional[float]
    torch_seconds: float
    onnxruntime_seconds: float

    def lines(self) -> List[str]:
        out = [f'{name}: max |onnxruntime - pytorch| = {diff:.3g}, '
               f'{share:.4%} of values moved (beyond rtol = atol = {MOVED_TOLERANCE:g})'
               for name, diff, share in zip(self.names, self.max_abs_diff, self.moved_share)]
        if self.argmax_agreement is not None:
            out.append(f'argmax over classes agrees on {self.argmax_agreement:.4%}')
        out.append(f'latency (median of {DEFAULT_TIMED_RUNS}, batch 1): pytorch eager '
                   f'{self.torch_seconds * 1e3:.1f} ms, onnxruntime {self.onnxruntime_seconds * 1e3:.1f} ms')
        return out


def verify_onnx(module: nn.Module, path: str, inputs: torch.Tensor, names: Sequence[str], scope: str,
                timed_runs: int = DEFAULT_TIMED_RUNS) -> Verification:
    """Run ``path`` in onnxruntime (CPU) and ``module`` in eager PyTorch on ``inputs``; compare and time."""
    require_deploy_packages()
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    feed = {session.get_inputs()[0].name: inputs.numpy()}
    ort_outputs = session.run(None, feed)
    with torch.no_grad():
        torch_outputs = module(inputs)
        if isinstance(torch_outputs, torch.Tensor):
            torch_outputs = (torch_outputs,)
        torch_seconds = median_seconds(lambda: module(inputs), timed_runs)
    ort_seconds = median_seconds(lambda: session.run(None, feed), timed_runs)
    diffs, shares = [], []
    for expected, got in zip(torch_outputs, ort_outputs):
        if tuple(expected.shape) != got.shape:
            raise RuntimeError(f'onnxruntime output shape {got.shape} != pytorch {tuple(expected.shape)}')
        got = torch.from_numpy(got)
        diffs.append(float((expected - got).abs().max()))
        shares.append(moved_share(expected, got))
    agreement = None
    if scope in ('mmpretrain', 'mmseg'):
        agreement = float((torch_outputs[0].argmax(1) == torch.from_numpy(ort_outputs[0]).argmax(1))
                          .float().mean())
    return Verification(list(names), diffs, shares, agreement, torch_seconds, ort_seconds)
