"""Plot the gradient norms and easy-negative shares that GradientStats wrote (one or several runs).

    python scripts/train.py fit --config configs/synthetic.yaml \
        --trainer.callbacks+=detector.training.gradients.GradientStats --trainer.callbacks.path=runs/g/ce.csv
    python scripts/gradient_stats.py runs/g/ce.csv runs/g/focal.csv --out runs/g/gradients.png --title "medium level"

One colour per CSV (its classification loss names it, or --labels); see detector/training/gradients.py
for the columns and what each number means.
"""

from __future__ import annotations

import argparse
import sys

from detector.evaluation.figures import save_png
from detector.training.gradients import gradient_figure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csvs", nargs="+", help="GradientStats CSVs, one per run")
    parser.add_argument("--labels", nargs="+", help="a legend label per CSV (default: its loss name)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--title", default="", help="the figure's title (e.g. the level)")
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.csvs):
        parser.error(f"{len(args.labels)} labels for {len(args.csvs)} CSVs")
    try:
        save_png(gradient_figure(args.csvs, args.labels, args.title), args.out)
    except (OSError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
