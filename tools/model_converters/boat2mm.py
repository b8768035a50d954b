"""Convert a checkpoint of the Swin / CSWin / BOAT family to boat_mm, and print the backbone that loads it.

    python tools/model_converters/boat2mm.py SRC DST [--ema] [--new-fsla] [--num-heads H ...] [--split-sizes S ...]

SRC: a released BOAT checkpoint of any architecture (BOAT-Swin .pth, BOAT-CSWin .pth.tar), an official Swin
(``swin_tiny_patch4_window7_224.pth``) or CSWin (``cswin_tiny_224.pth``) ImageNet checkpoint, or an mmdet /
mmseg / mmpretrain Swin checkpoint. DST holds ``backbone.*`` (and ``head.fc.*`` for classifiers): an mmpretrain
classifier config loads it strictly, downstream configs through ``init_cfg=dict(type='Pretrained',
checkpoint=DST, prefix='backbone.')``. Plain Swin / CSWin weights load into our backbone with
``fsla_stages=()``; ``--new-fsla`` prints the BOAT backbone instead and lists the FSLA parameters that start
fresh. CSWin heads and stripe widths are in no tensor shape: give them for a custom CSWin.
"""
import argparse
import os
import pickle
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from boat_mm.apis.checkpoint_conversion import convert_checkpoint  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='checkpoint to convert')
    parser.add_argument('dst', help='output checkpoint for boat_mm')
    parser.add_argument('--ema', action='store_true', help='convert the EMA weights (timm state_dict_ema)')
    parser.add_argument('--new-fsla', action='store_true',
                        help='plain Swin / CSWin weights for BOAT: FSLA switched on and freshly initialised')
    parser.add_argument('--num-heads', type=int, nargs='+', help='CSWin heads per stage (not in the weights)')
    parser.add_argument('--split-sizes', type=int, nargs='+', help='CSWin stripe widths per stage (not in the weights)')
    parser.add_argument('--window-size', type=int,
                        help='Swin: resize the relative position bias tables (bicubic) for this window, e.g. 12 '
                             'to fine-tune at 384 from window-7 weights')
    args = parser.parse_args(argv)
    try:
        summary = convert_checkpoint(args.src, args.dst, args.ema, new_fsla=args.new_fsla,
                                     num_heads=args.num_heads, split_sizes=args.split_sizes,
                                     window_size=args.window_size)
    except (ValueError, FileNotFoundError, RuntimeError, pickle.UnpicklingError) as error:
        sys.exit(f'error: {error}')
    print(f"converted {summary['description']} ({summary['family']}-{summary['arch']})"
          f"{' (EMA)' if summary['ema'] else ''}: {summary['num_tensors']} tensors written to {args.dst}, "
          f"{summary['dropped']} rebuilt buffers and non-backbone tensors dropped")
    for note in summary['notes']:
        print(f'note: {note}')
    print(f"paste into your config: {summary['config_line']}")
    if args.new_fsla:
        new = summary['new_parameters']
        print(f'{len(new)} new backbone parameters start freshly initialised: {", ".join(new)}')


if __name__ == '__main__':
    main()
