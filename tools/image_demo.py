"""Show a config's predictions on one image, drawn by its toolbox's own inferencer and visualizer.

    python tools/image_demo.py IMAGE CONFIG [CHECKPOINT] --out OUT.png [--device cpu|cuda] [--score-thr 0.3]

The config's ``default_scope`` decides what is drawn: mmseg, the class overlay and a legend of the classes
present; mmdet, the boxes and masks scoring at least --score-thr, with labels and scores; mmpretrain, the
top-5 classes with scores. OUT.png has the size of IMAGE. Without CHECKPOINT the weights are random: it
says so on stderr and in the picture (the predictions are then meaningless, but the pipeline is exercised).
"""
import argparse
import os
import pickle
import sys

import mmcv
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import boat_mm  # noqa: E402,F401
from boat_mm.apis.inference import DEFAULT_SCORE_THR, load_config, predict, render  # noqa: E402
from boat_mm.utils.checkpoint import DamagedCheckpointError  # noqa: E402

RANDOM_WEIGHTS_WARNING = ('WARNING: no CHECKPOINT given, the model has RANDOM WEIGHTS: '
                          'its predictions are meaningless')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('image')
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?', help='weights (default: random, with a warning)')
    parser.add_argument('--out', required=True, help='output PNG')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--score-thr', type=float, default=DEFAULT_SCORE_THR,
                        help=f'mmdet: least score of an instance drawn (default {DEFAULT_SCORE_THR})')
    args = parser.parse_args(argv)
    for kind, path in (('image', args.image), ('config', args.config), ('checkpoint', args.checkpoint)):
        if path and not os.path.isfile(path):
            sys.exit(f'error: {kind} not found: {path}')
    if args.device == 'cuda' and not torch.cuda.is_available():
        sys.exit('error: --device cuda, but CUDA is not available')
    if mmcv.imread(args.image) is None:
        sys.exit(f'error: cannot read an image from {args.image}')
    try:
        cfg, scope = load_config(args.config)
    except ValueError as error:
        sys.exit(f'error: {error}')
    if not args.checkpoint:
        print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
    try:
        prediction = predict(cfg, scope, args.image, args.checkpoint, args.device, args.score_thr)
    except (DamagedCheckpointError, pickle.UnpicklingError) as error:  # a checkpoint that cannot be read
        sys.exit(f'error: {error}')
    picture = render(prediction, random_weights=not args.checkpoint)
    mmcv.imwrite(picture[..., ::-1], args.out)  # RGB -> BGR; creates the folder
    print(f'wrote {args.out} ({scope}{", random weights" if not args.checkpoint else ""}): {prediction.summary}')
    return prediction


if __name__ == '__main__':
    main()
