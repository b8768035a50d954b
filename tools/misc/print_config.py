"""Print a config fully merged (its _base_ chain and --cfg-options applied), as mmengine reads it.

    python tools/misc/print_config.py CONFIG [--cfg-options k=v ...] [--save-path FILE.py]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from mmengine.config import Config, DictAction  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file path')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys, k=v')
    parser.add_argument('--save-path', help='also write the merged config to this file (.py, .json or .yaml)')
    args = parser.parse_args(argv)
    if not os.path.isfile(args.config):
        sys.exit(f'error: config not found: {args.config}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    print(cfg.pretty_text)
    if args.save_path:
        cfg.dump(args.save_path)
    return cfg


if __name__ == '__main__':
    main()
