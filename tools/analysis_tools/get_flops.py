"""Parameters and FLOPs of any boat_mm config (FSLA projections, attention, LePE and clustering counted).

    python tools/analysis_tools/get_flops.py CONFIG [--shape H W]

Default input: 224x224 (classification), 512x512 (segmentation), 800x1280 i.e. 1280x800 (detection).
One multiply-add counts as one FLOP, as in the OpenMMLab model zoos.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

import boat_mm  # noqa: E402,F401
from boat_mm.analysis import count_complexity  # noqa: E402
from boat_mm.training import build_model_without_weights  # noqa: E402

DEFAULT_SHAPES = {'mmpretrain': (224, 224), 'mmseg': (512, 512), 'mmdet': (800, 1280)}


def _det_samples(height, width):
    from mmdet.structures import DetDataSample
    meta = dict(img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width),
                batch_input_shape=(height, width), scale_factor=(1.0, 1.0))
    return [DetDataSample(metainfo=meta)]


def complexity_of_config(config, shape=None):
    cfg, model = build_model_without_weights(config)  # counting needs no weights
    scope = cfg.get('default_scope', 'mmpretrain')
    height, width = shape or DEFAULT_SHAPES[scope]
    samples = _det_samples(height, width) if scope == 'mmdet' else None
    stats = count_complexity(model, torch.zeros(1, 3, height, width), samples)
    return dict(stats, shape=(height, width), scope=scope)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'), help='input height and width')
    args = parser.parse_args(argv)
    stats = complexity_of_config(args.config, args.shape)
    height, width = stats['shape']
    print(f'config:     {args.config}')
    print(f'input:      1x3x{height}x{width}')
    print(f'params:     {stats["params"] / 1e6:.2f} M ({stats["params"]:,})')
    print(f'FLOPs:      {stats["flops"] / 1e9:.2f} G ({stats["flops"]:,})')
    print(f'  of which FSLA: {stats["fsla_flops"] / 1e9:.2f} G in {stats["fsla_calls"]} calls '
          f'(a generic counter saw only {stats["generic_flops_seen_in_fsla"] / 1e9:.2f} G of it)')


if __name__ == '__main__':
    main()
