"""Draw the feature-space clusters of one FSLA block over an image.

    python tools/visualize_clusters.py IMAGE CONFIG [CHECKPOINT] --out OUT.png
                                       [--stage S] [--block B] [--head H] [--point X Y]

The image goes through the config's test pipeline (annotation loading left out) and data preprocessor
(resize, normalisation), then through the backbone; the chosen FSLA block records its clustering.
Panels: the image with that stage's windows (BOAT-Swin) or stripes (BOAT-CSWin); the clusters of head H
in colour; with ``--point``, the cluster and sibling-overlap tokens of the patch under pixel (X, Y) and
its attention weights.

--stage is 1-based (stage 1 = stride 4) as in the paper; --block indexes the blocks of that stage
(default: its first FSLA block). X, Y are pixel coordinates of the image as drawn (after the resize).
Works with random weights (no CHECKPOINT) and with converted released weights.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import boat_mm  # noqa: E402,F401
from boat_mm.utils.datasets import model_inputs_of_image  # noqa: E402
from boat_mm.utils.model_builder import build_model  # noqa: E402
from boat_mm.visualization import capture_clusters, draw_figure, fsla_blocks  # noqa: E402


def drawable_image(model, inputs):
    """The preprocessed image as drawn: normalisation undone, RGB, uint8 (H, W, 3)."""
    prep = model.data_preprocessor
    image = inputs[0] * prep.std.view(-1, 1, 1) + prep.mean.view(-1, 1, 1) if hasattr(prep, 'std') else inputs[0]
    # Images load as BGR; the preprocessor flips them to RGB when its config says so (attribute named
    # differently in mmengine/mmpretrain/mmdet and in mmseg). Shown as RGB either way.
    converted = getattr(prep, '_channel_conversion', False) or getattr(prep, 'channel_conversion', False)
    if not converted:
        image = image.flip(0)
    return image.permute(1, 2, 0).clamp(0, 255).byte().numpy()


def stage_grid(backbone, stage, hw_shape):
    """Token rows/columns where the image-space attention regions of ``stage`` begin."""
    if hasattr(backbone.stages[stage].blocks[0], 'window_size'):
        size = backbone.stages[stage].blocks[0].window_size
        if min(hw_shape) <= size:
            return dict(label=f'stage {stage + 1}: one {size}x{size} window')
        return dict(rows=range(0, hw_shape[0], size), cols=range(0, hw_shape[1], size),
                    label=f'stage {stage + 1}: {size}x{size} windows (unshifted)')
    attns = backbone.stages[stage].blocks[0].attns
    if len(attns) == 1:
        return dict(label=f'stage {stage + 1}: global attention')
    size = attns[0].stripe_w
    return dict(rows=range(0, hw_shape[0], size), cols=range(0, hw_shape[1], size),
                label=f'stage {stage + 1}: cross-shaped stripes of width {size}')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('image')
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?')
    parser.add_argument('--out', required=True, help='output PNG')
    parser.add_argument('--stage', type=int, default=1, help='1-based stage (default 1)')
    parser.add_argument('--block', type=int, help='block index in the stage (default: its first FSLA block)')
    parser.add_argument('--head', type=int, default=0)
    parser.add_argument('--point', type=int, nargs=2, metavar=('X', 'Y'))
    args = parser.parse_args(argv)
    if not os.path.isfile(args.image):
        sys.exit(f'error: image not found: {args.image}')
    cfg, model = build_model(args.config, args.checkpoint)  # weights from CHECKPOINT, if any
    backbone = model.backbone
    stage = args.stage - 1
    available = fsla_blocks(backbone)
    if args.block is None:
        in_stage = [b for s, b in available if s == stage]
        if not in_stage:
            sys.exit(f'error: stage {args.stage} has no FSLA block; FSLA (stage, block) pairs, 1-based stages: '
                     f'{[(s + 1, b) for s, b in available]}')
        args.block = in_stage[0]
    inputs, _ = model_inputs_of_image(model, cfg, cfg.get('default_scope', 'mmpretrain'), args.image)
    image = drawable_image(model, inputs)
    try:
        record = capture_clusters(backbone, inputs, stage, args.block)
    except ValueError as error:
        sys.exit(f'error: {error}')
    fsla = record['module']
    if not 0 <= args.head < fsla.num_heads:
        sys.exit(f'error: --head must be in [0, {fsla.num_heads}) for this block')
    if args.point and not (0 <= args.point[0] < image.shape[1] and 0 <= args.point[1] < image.shape[0]):
        sys.exit(f'error: --point must lie inside the {image.shape[1]}x{image.shape[0]} image as drawn')
    title = (f'{os.path.basename(args.config)}: stage {args.stage}, block {args.block}, head {args.head}'
             f'{"" if args.checkpoint else " (random weights)"}')
    drawn = draw_figure(image, record, args.head, args.out, stage_grid(backbone, stage, record['hw_shape']),
                        tuple(args.point) if args.point else None, title)
    print(f'wrote {args.out}: {drawn["num_clusters"]} clusters over {record["plan"].num_tokens} tokens '
          f'({record["hw_shape"][0]}x{record["hw_shape"][1]})')
    return drawn


if __name__ == '__main__':
    main()
