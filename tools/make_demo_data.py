"""Write the synthetic demo datasets (ImageNet, COCO and ADE20K formats) in seconds.

    python tools/make_demo_data.py [ROOT] [--only imagenet coco ade20k]     # default ROOT: data/demo
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from boat_mm.testing.demo_data import make_ade20k, make_coco, make_imagenet  # noqa: E402

MAKERS = dict(imagenet=make_imagenet, coco=make_coco, ade20k=make_ade20k)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', nargs='?', default='data/demo')
    parser.add_argument('--only', nargs='+', choices=sorted(MAKERS), default=sorted(MAKERS))
    args = parser.parse_args(argv)
    for name in args.only:
        start = time.perf_counter()
        counts = MAKERS[name](os.path.join(args.root, name))
        print(f'{name}: {counts} images in {os.path.join(args.root, name)} '
              f'({time.perf_counter() - start:.1f} s)')


if __name__ == '__main__':
    main()
