"""Every ADE20K test-time-augmentation scale through the whole BOAT segmentor: time and peak memory.

    python benchmarks/bench_tta_sizes.py [--config configs/upernet_boat_cswin_ade20k.py] [--image 512x683]
                                         [--device cpu|cuda] [--repeats 1]

``tools/test.py --tta`` on an ADE20K config resizes each image by 0.5 ... 1.75 (mmseg's ADE20K TTA) and runs
the segmentor on the whole image (``test_cfg.mode='whole'``): FSLA then clusters a different number of tokens
per scale, up to 224x299 = 66976 tokens per head at stage 1 for a 512x683 image at 1.75 (896x1195). Random
weights (speed does not depend on them), eval mode, fp32, batch 1; one row per scale with the stage-1 token
count, seconds per forward (backbone + decode heads), and peak memory of that forward.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks.common import configure_allocator, machine_description, markdown_table, median_seconds, peak_memory_mb  # noqa: E402
from boat_mm.utils.model_builder import build_model  # noqa: E402
from boat_mm.utils.progress import note  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/upernet_boat_cswin_ade20k.py')
    parser.add_argument('--image', default='512x683', help='HxW of the original image (ADE20K: short side 512)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--repeats', type=int, default=1)
    args = parser.parse_args(argv)
    allocator = configure_allocator(args.device)
    cfg, model = build_model(args.config)
    model.to(args.device)
    resizes = [step for step in cfg.tta_pipeline[1].transforms[0] if step.get('type') == 'Resize']
    height, width = (int(v) for v in args.image.split('x'))
    rows = []
    for step in resizes:
        ratio = step.scale_factor
        h, w = round(height * ratio), round(width * ratio)
        x = torch.randn(1, 3, h, w, device=args.device)
        note(f'TTA scale {ratio:g}: {h}x{w}', 'bench_tta_sizes')

        def forward():
            with torch.no_grad():
                return model(x, mode='tensor')  # backbone + decode head (mmseg's whole-image inference)
        seconds = median_seconds(forward, min_runs=args.repeats)
        memory = peak_memory_mb(forward, args.device)
        logits = forward()  # at the stage-1 resolution (UperNet fuses the pyramid there)
        rows.append({'scale': f'{ratio:g}', 'input': f'{h}x{w}', 'stage-1 tokens': logits.shape[-2] * logits.shape[-1],
                     's / forward': f'{seconds:.2f}', 'peak MB': f'{memory:.0f}'})
    print(f'# {os.path.basename(args.config)}: ADE20K TTA scales of a {args.image} image, whole inference, fp32, '
          f'batch 1, {machine_description(args.device)}, {allocator}')
    print(markdown_table(rows, ['scale', 'input', 'stage-1 tokens', 's / forward', 'peak MB']))


if __name__ == '__main__':
    main()
