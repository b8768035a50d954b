"""Export a config's model to ONNX (static shape) and optionally check it in onnxruntime on an image.

    python tools/deployment/export_onnx.py CONFIG [CHECKPOINT] --shape H W --out FILE.onnx [--verify IMAGE]

mmpretrain configs export class logits, mmseg configs the segmentation logits of the whole segmentor at the
input size, mmdet configs the backbone + neck features (see boat_mm/apis/deployment.py). The ONNX input
``input`` is the (1, 3, H, W) image after the config's data preprocessor. The cluster plan of BOAT's
feature-space attention depends on the token count, so each file serves the one shape it was exported at.

--verify IMAGE runs IMAGE through the config's test preprocessing (resized to H x W if it gives another
size), then through onnxruntime and eager PyTorch, and prints max |difference| per output, the share of
values that moved, argmax agreement and both latencies. Without CHECKPOINT the weights are random (said on
stderr). Needs the ``deploy`` extra: pip install onnx onnxscript onnxruntime.

Each phase (build, export, verify) prints a line on stderr when it starts and ends: export takes 1-5
minutes on 2 CPU cores. --verbose adds torch's own exporter messages.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from boat_mm.apis import deployment  # noqa: E402
from boat_mm.utils.progress import phase  # noqa: E402

TOOL = 'export_onnx'

RANDOM_WEIGHTS_WARNING = 'WARNING: no CHECKPOINT given, exporting RANDOM WEIGHTS'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?', help='weights (default: random, with a warning)')
    parser.add_argument('--shape', type=int, nargs=2, required=True, metavar=('H', 'W'),
                        help='input height and width the file is exported for')
    parser.add_argument('--out', required=True, help='output .onnx file')
    parser.add_argument('--verify', metavar='IMAGE', help='compare onnxruntime with PyTorch on this image')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the random weights (without CHECKPOINT) and of the example input (default 0)')
    parser.add_argument('--verbose', action='store_true', help="torch.onnx.export's own step messages too")
    parser.add_argument('--opset', type=int, default=deployment.DEFAULT_OPSET,
                        help=f'ONNX opset (default {deployment.DEFAULT_OPSET})')
    args = parser.parse_args(argv)
    for kind, path in (('config', args.config), ('checkpoint', args.checkpoint), ('image', args.verify)):
        if path and not os.path.isfile(path):
            sys.exit(f'error: {kind} not found: {path}')
    if min(args.shape) < 1:
        sys.exit(f'error: --shape must be positive, got {args.shape}')
    try:
        deployment.require_deploy_packages()
    except ImportError as error:
        sys.exit(f'error: {error}')
    if args.checkpoint is None:
        print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)

    torch.manual_seed(args.seed)  # the same random weights every run: results are reproducible
    with phase(f'building the model of {args.config}', TOOL):
        model, cfg, scope = deployment.build_model(args.config, args.checkpoint)
        module, task = deployment.exportable(model, scope)
        example = torch.randn(1, 3, *args.shape)
        names = task.output_names(module, example)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with phase(f'exporting to {args.out} (torch.export, then ONNX; minutes on a CPU)', TOOL):
        deployment.export_onnx(module, example, args.out, names, opset=args.opset, verbose=args.verbose)
    print(f'exported {scope} {task.describe} ({", ".join(names)}) at 1x3x{args.shape[0]}x{args.shape[1]} '
          f'to {args.out}')

    if args.verify:
        inputs, note = deployment.preprocess_image(model, cfg, scope, args.verify, tuple(args.shape))
        if note:
            print(note)
        with phase(f'verifying {args.out} in onnxruntime against PyTorch on {args.verify}', TOOL):
            verification = deployment.verify_onnx(module, args.out, inputs, names, scope)
        for line in verification.lines():
            print(line)


if __name__ == '__main__':
    main()
