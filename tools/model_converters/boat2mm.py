"""Convert a released BOAT checkpoint (BOAT-Swin .pth, BOAT-CSWin .pth.tar, or a bare state dict) to boat_mm.

    python tools/model_converters/boat2mm.py SRC DST [--ema]

DST holds ``backbone.*`` and ``head.fc.*`` keys: an mmpretrain classifier config loads it strictly
(``tools/test.py configs/cls_boat_cswin_imagenet.py DST``), and downstream configs take it through
``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')``.
"""
import argparse
import os
import pickle
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from boat_mm.converters import convert_checkpoint  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='released checkpoint')
    parser.add_argument('dst', help='output checkpoint for boat_mm')
    parser.add_argument('--ema', action='store_true', help='convert the EMA weights (timm state_dict_ema)')
    args = parser.parse_args(argv)
    try:
        summary = convert_checkpoint(args.src, args.dst, args.ema)
    except (ValueError, FileNotFoundError, RuntimeError, pickle.UnpicklingError) as error:
        sys.exit(f'error: {error}')
    print(f"converted {summary['family']}-{summary['arch']}{' (EMA)' if summary['ema'] else ''}: "
          f"{summary['num_tensors']} tensors written to {args.dst}, {summary['dropped']} rebuilt buffers dropped")


if __name__ == '__main__':
    main()
