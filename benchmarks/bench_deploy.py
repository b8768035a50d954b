"""Leaving eager PyTorch, measured: BOAT backbones in eager PyTorch, in onnxruntime and under torch.compile.

    python benchmarks/bench_deploy.py [--models swin cswin] [--sizes 224 512] [--runtimes onnxruntime compile]
                                      [--backend inductor] [--arch tiny] [--repeats 5]

For every backbone and 1x3xHxW input (random weights, eval, fp32): latency of eager PyTorch (CPU clustering
kernel), of the exported ONNX file in onnxruntime (CPU provider) and of ``torch.compile(fullgraph=True)``
(torch clustering), the one-off cost of exporting / compiling, and parity against eager: max |difference|
over the stage outputs and the share of values that moved beyond rtol = atol = 1e-5. One row per runtime;
``x eager`` is that runtime's latency over eager's, from the same run.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks.common import configure_allocator, machine_description, markdown_table, median_seconds  # noqa: E402
from boat_mm import BOATCSWinTransformer, BOATSwinTransformer  # noqa: E402
from boat_mm.apis import deployment  # noqa: E402
from boat_mm.utils.progress import note  # noqa: E402

MODELS = {'swin': ('BOAT-Swin', BOATSwinTransformer), 'cswin': ('BOAT-CSWin', BOATCSWinTransformer)}
ARCH_LETTER = {'tiny': 'T', 'small': 'S', 'base': 'B'}


def _parity(eager, other):
    diff = max(float((a - b).abs().max()) for a, b in zip(eager, other))
    moved = max(deployment.moved_share(a, b) for a, b in zip(eager, other))
    return f'{diff:.2g}', f'{moved:.3%}'


def _onnxruntime(model, x, eager, workdir, repeats, min_seconds):
    import onnxruntime as ort
    path = os.path.join(workdir, 'backbone.onnx')
    start = time.perf_counter()
    deployment.export_onnx(model, x, path, [f'stage{i}' for i in range(len(eager))])
    setup = time.perf_counter() - start
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    feed = {session.get_inputs()[0].name: x.numpy()}
    outputs = [torch.from_numpy(o) for o in session.run(None, feed)]
    seconds = median_seconds(lambda: session.run(None, feed), repeats, min_seconds=min_seconds)
    return seconds, setup, outputs


def _compiled(model, x, eager, backend, repeats, min_seconds):
    compiled = torch.compile(model, fullgraph=True, dynamic=False, backend=backend)
    start = time.perf_counter()
    with torch.no_grad():
        outputs = compiled(x)
    setup = time.perf_counter() - start

    def forward():
        with torch.no_grad():
            compiled(x)
    return median_seconds(forward, repeats, min_seconds=min_seconds), setup, outputs


def run(args):
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for key in args.models:
            family, cls = MODELS[key]
            name = f'{family}-{ARCH_LETTER.get(args.arch, args.arch)}'
            for size in args.sizes:
                note(f'{name} at 1x3x{size}x{size}: eager, then {", ".join(args.runtimes)}', 'bench_deploy')
                torch.manual_seed(0)
                model = cls(args.arch).eval()
                x = torch.randn(1, 3, size, size)

                def forward(model=model, x=x):
                    with torch.no_grad():
                        return model(x)
                eager = forward()
                eager_seconds = median_seconds(forward, args.repeats, min_seconds=args.min_seconds)
                base = dict(model=name, input=f'1x3x{size}x{size}')
                rows.append(dict(base, runtime='pytorch eager', ms=round(eager_seconds * 1e3, 1),
                                 **{'x eager': 1.0, 'export/compile s': '-', 'max diff': '-', 'moved': '-'}))
                for runtime in args.runtimes:
                    if runtime == 'onnxruntime':
                        seconds, setup, outputs = _onnxruntime(model, x, eager, workdir, args.repeats,
                                                               args.min_seconds)
                        label = 'onnxruntime'
                    else:
                        seconds, setup, outputs = _compiled(model, x, eager, args.backend, args.repeats,
                                                            args.min_seconds)
                        label = f'torch.compile ({args.backend})'
                    diff, moved = _parity(eager, outputs)
                    rows.append(dict(base, runtime=label, ms=round(seconds * 1e3, 1),
                                     **{'x eager': round(seconds / eager_seconds, 2),
                                        'export/compile s': round(setup, 1), 'max diff': diff, 'moved': moved}))
                    print(rows[-1], flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', nargs='+', choices=sorted(MODELS), default=['swin', 'cswin'])
    parser.add_argument('--arch', default='tiny', help='backbone arch (default tiny)')
    parser.add_argument('--sizes', nargs='+', type=int, default=[224, 512])
    parser.add_argument('--runtimes', nargs='+', choices=['onnxruntime', 'compile'],
                        default=['onnxruntime', 'compile'])
    parser.add_argument('--backend', default='inductor', help='torch.compile backend (default inductor)')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--min-seconds', type=float, default=2.0)
    args = parser.parse_args(argv)
    if 'onnxruntime' in args.runtimes:
        deployment.require_deploy_packages()
    allocator = configure_allocator('cpu')
    print(f'# deploy: eager vs onnxruntime vs torch.compile, fp32, batch 1, {machine_description()}, {allocator}')
    rows = run(args)
    print(markdown_table(rows, list(rows[0])))
    return rows


if __name__ == '__main__':
    main()
