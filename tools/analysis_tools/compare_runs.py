"""Compare finished training runs side by side: a Markdown table and PNG curves.

    python tools/analysis_tools/compare_runs.py WORK_DIR [WORK_DIR ...] [--out DIR] [--no-flops]

Reads each work dir's mmengine logs (``<timestamp>/vis_data/scalars.json``, resumed runs merged) and its
dumped config. The table has, per run, the final and best value of every metric logged (mIoU / mAcc / aAcc,
COCO bbox / segm mAP, top-1 / top-5), parameters and FLOPs of the config's model (at the task's default
input: 224, 512x512, 1280x800; --no-flops skips them), iterations and training time. --out DIR (default
work_dirs/compare) receives compare.md, loss.png and <metric>.png.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import boat_mm  # noqa: E402,F401  (registers BOAT for the config's model)
from boat_mm.analysis.runs import comparison_table, load_run, plot_curves  # noqa: E402
from boat_mm.utils.progress import note, phase  # noqa: E402

TOOL = 'compare_runs'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dirs', nargs='+', metavar='WORK_DIR')
    parser.add_argument('--out', default='work_dirs/compare', help='where compare.md and the PNGs go')
    parser.add_argument('--no-flops', action='store_true', help='skip params and FLOPs (no model is built)')
    args = parser.parse_args(argv)
    try:
        with phase(f'reading the logs of {len(args.work_dirs)} run(s)', TOOL):
            runs = [load_run(work_dir) for work_dir in args.work_dirs]
    except FileNotFoundError as error:
        sys.exit(f'error: {error}')
    complexity = {}
    if not args.no_flops:
        from boat_mm.analysis import complexity_of_config
        for run in runs:
            if run.config:
                with phase(f'params and FLOPs of {run.name} (builds its model)', TOOL):
                    complexity[run.work_dir] = complexity_of_config(run.config)
            else:
                note(f'no dumped config in {run.work_dir}: params and FLOPs left out', TOOL)
    os.makedirs(args.out, exist_ok=True)
    with phase('drawing the curves', TOOL):
        curves = plot_curves(runs, args.out)
    table = comparison_table(runs, complexity)
    with open(os.path.join(args.out, 'compare.md'), 'w') as out:
        out.write(table + '\n')
    print(table)
    for path in [os.path.join(args.out, 'compare.md')] + curves:
        print(f'wrote {path}')


if __name__ == '__main__':
    main()
