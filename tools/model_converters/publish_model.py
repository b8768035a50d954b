"""Prepare a trained checkpoint for release: training state removed, sha256 prefix in the file name.

    python tools/model_converters/publish_model.py IN.pth OUT.pth     # writes OUT-<8 hex digits>.pth

The result loads in tools/test.py and, for detection / segmentation, as ImageNet or backbone weights through
init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.'). See boat_mm/apis/publish.py.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from boat_mm.apis.publish import TRAINING_STATE_KEYS, publish_checkpoint  # noqa: E402
from boat_mm.utils.checkpoint import DamagedCheckpointError  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('in_file', help='checkpoint written by training')
    parser.add_argument('out_file', help='output name; the hash is appended before .pth')
    args = parser.parse_args(argv)
    if not os.path.isfile(args.in_file):
        sys.exit(f'error: checkpoint not found: {args.in_file}')
    try:
        final = publish_checkpoint(args.in_file, args.out_file)
    except (ValueError, DamagedCheckpointError) as error:
        sys.exit(f'error: {error}')
    print(f'published {final} ({os.path.getsize(final) / 2 ** 20:.1f} MiB; removed if present: '
          f'{", ".join(TRAINING_STATE_KEYS)})')
    return final


if __name__ == '__main__':
    main()
