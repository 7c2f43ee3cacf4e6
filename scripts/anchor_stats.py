"""How imbalanced is a dataset for a given anchor setup? Positive, negative and ignored anchors per image.

    python scripts/anchor_stats.py --config configs/synthetic.yaml [--max-images 200]

Uses the config's data: section (evaluation transforms: resize only) and its model.detector
anchor and matcher settings; prints the table and writes nothing.
"""

from __future__ import annotations

import argparse
import sys

from detector.cli import one_line_errors
from detector.check_data import anchor_statistics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a training config (YAML)")
    parser.add_argument("--max-images", type=int, default=200, help="validation images to count over")
    args = parser.parse_args(argv)
    with one_line_errors():
        stats = anchor_statistics(args.config, args.max_images)
    print("| statistic | value |\n|---|---:|")
    for k, v in stats.items():
        print(f"| {k} | {v:,.1f} |" if isinstance(v, float) and v >= 1 else f"| {k} | {v:.3g} |")
    print(f"\npositive : negative anchors = 1 : {stats['negatives_per_positive']:.0f}; "
          f"positive : negative sigmoid terms = 1 : {stats['negative_terms_per_positive_term']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
