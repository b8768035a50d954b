"""`make demo`: train BOAT-CSWin-T + UperNet on the synthetic ADE20K-format demo data on CPU, evaluate it,
compare with chance, and write prediction overlays.

    python tools/demo.py [--work-dir work_dirs/demo] [--data-root data/demo] [--iters N]

It runs ``configs/demo/upernet_boat_cswin_ade20k_demo.py``, i.e. ``configs/upernet_boat_cswin_ade20k.py``
with only data root, crop, schedule and norm changed for a CPU.
"""
import argparse
import glob
import os
import os.path as osp
import sys
import time

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

import boat_mm  # noqa: E402,F401
from boat_mm.engine.runner_setup import build_runner, load_config, prepare  # noqa: E402
from boat_mm.testing.demo_data import make_ade20k  # noqa: E402

DEMO_CONFIG = 'configs/demo/upernet_boat_cswin_ade20k_demo.py'
OVERLAY_ALPHA = 0.5
CHANCE_SEED = 0
WARMUP_FRACTION = 6  # --iters N: linear warm-up over the first N / 6 iterations


def chance_miou(label_files, num_classes, ignore_index=255):
    """mIoU of a predictor that picks a class uniformly at random per pixel (what 'no learning' scores)."""
    from PIL import Image
    rng = np.random.default_rng(CHANCE_SEED)
    intersection = np.zeros(num_classes)
    union = np.zeros(num_classes)
    for path in label_files:
        labels = np.asarray(Image.open(path)).astype(np.int64) - 1  # reduce_zero_label: 0 -> ignored
        labels[labels < 0] = ignore_index
        valid = labels != ignore_index
        guess = rng.integers(num_classes, size=labels.shape)
        for c in range(num_classes):
            pred_c, true_c = (guess == c) & valid, (labels == c) & valid
            intersection[c] += (pred_c & true_c).sum()
            union[c] += (pred_c | true_c).sum()
    return float(np.mean(intersection / np.maximum(union, 1)) * 100)


def write_overlays(model, cfg, image_files, label_dir, out_dir):
    """image | ground truth | prediction, side by side, for every validation image (PNG)."""
    from mmseg.apis import inference_model
    from PIL import Image
    os.makedirs(out_dir, exist_ok=True)
    palette = np.array(cfg.metainfo['palette'], dtype=np.float64)
    model.cfg = cfg
    written = []
    for image_path in image_files:
        image = np.asarray(Image.open(image_path).convert('RGB'), dtype=np.float64)
        stem = osp.splitext(osp.basename(image_path))[0]
        truth = np.asarray(Image.open(osp.join(label_dir, stem + '.png'))).astype(np.int64) - 1
        pred = inference_model(model, image_path).pred_sem_seg.data[0].cpu().numpy()

        def paint(label_map, where):
            out = image.copy()
            out[where] = (1 - OVERLAY_ALPHA) * image[where] + OVERLAY_ALPHA * palette[label_map[where]]
            return out

        # ADE20K's label 0 ("other") is ignored in training and scoring, so the prediction is shown on
        # the labelled pixels only: that is what the mIoU measures.
        labelled = truth >= 0
        panel = np.concatenate([image, paint(truth, labelled), paint(pred, labelled)], axis=1)
        panel = panel.clip(0, 255).astype(np.uint8)
        path = osp.join(out_dir, stem + '.png')
        Image.fromarray(panel).save(path)
        written.append(path)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/demo')
    parser.add_argument('--iters', type=int, help='override the number of training iterations')
    args = parser.parse_args(argv)
    start = time.perf_counter()
    ade_root = osp.join(args.data_root, 'ade20k')
    if not osp.isdir(osp.join(ade_root, 'annotations', 'validation')):
        print(f'[demo] writing synthetic ADE20K-format data to {ade_root}')
        make_ade20k(ade_root)

    options = {f'{loader}.dataset.data_root': ade_root
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')}
    if args.iters:
        warmup = max(1, args.iters // WARMUP_FRACTION)
        options.update({'train_cfg.max_iters': args.iters, 'train_cfg.val_interval': args.iters,
                        'param_scheduler.0.end': warmup, 'param_scheduler.1.begin': warmup,
                        'param_scheduler.1.end': args.iters})
    cfg = load_config(DEMO_CONFIG, options, args.work_dir)
    prepare(cfg, loaders=('train_dataloader', 'val_dataloader', 'test_dataloader'))
    print(f'[demo] training {DEMO_CONFIG} for {cfg.train_cfg.max_iters} iterations on CPU '
          f'(BOAT-CSWin-T + UperNet, {cfg.crop_size[0]}x{cfg.crop_size[1]} crops)')
    runner = build_runner(cfg)
    runner.train()
    metrics = runner.test()

    val_images = sorted(glob.glob(osp.join(ade_root, 'images', 'validation', '*.jpg')))
    label_dir = osp.join(ade_root, 'annotations', 'validation')
    chance = chance_miou([osp.join(label_dir, osp.splitext(osp.basename(p))[0] + '.png') for p in val_images],
                         len(cfg.metainfo['classes']))
    overlay_dir = osp.join(args.work_dir, 'overlays')
    overlays = write_overlays(runner.model.eval(), cfg, val_images, label_dir, overlay_dir)
    checkpoints = sorted(glob.glob(osp.join(args.work_dir, 'iter_*.pth')))
    print('\n[demo] done in {:.0f} s'.format(time.perf_counter() - start))
    print(f'[demo] validation mIoU: {metrics["mIoU"]:.2f} (chance level, uniform random guess: {chance:.2f})')
    print(f'[demo] checkpoints:      {", ".join(checkpoints)}')
    print(f'[demo] logs:             {runner.log_dir}')
    print(f'[demo] overlays ({len(overlays)}): {overlay_dir}/  (image | ground truth | prediction on labelled pixels)')
    return dict(mIoU=metrics['mIoU'], chance=chance)


if __name__ == '__main__':
    main()
