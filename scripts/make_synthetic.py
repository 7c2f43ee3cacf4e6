"""Generate the synthetic shapes dataset (COCO format) that `make train` and the loss study use.

    python scripts/make_synthetic.py --out data/synthetic
    python scripts/make_synthetic.py --out /tmp/syn --num-train 200 --num-val 50 --mean-objects 12 --noise-std 16
    python scripts/make_synthetic.py --out /tmp/syn2 --image-size 192 --mean-objects 4 --max-objects 10 --canvas 2

Writes {out}/train.json, {out}/val.json and {out}/images/{train,val}/*.jpg (file_name relative to
{out}/images); deterministic by --seed. --canvas c puts each image (canvas 1's, pixel for pixel)
at the top left of a c x larger square of its plain background colour. See
detector/data/synthetic.py for what is drawn. Prints the measured generation speed (images/s) at the end.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from detector.data.errors import DatasetError
from detector.data.synthetic import SyntheticSpec, make_synthetic


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--out", required=True, help="destination folder")
    add("--num-train", type=int, default=2000, help="training images")
    add("--num-val", type=int, default=300, help="validation images")
    add("--seed", type=int, default=0, help="the same seed writes the same dataset")
    for knob in fields(SyntheticSpec):  # the generator's settings, from its one table
        add("--" + knob.name.replace("_", "-"), type=type(knob.default), default=knob.default,
            help=knob.metadata["help"])
    add("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        knobs = {knob.name: getattr(args, knob.name) for knob in fields(SyntheticSpec)}
        stats = make_synthetic(args.out, num_train=args.num_train, num_val=args.num_val, seed=args.seed,
                               progress=not args.no_progress, **knobs)
    except (DatasetError, ValueError, OSError) as err:  # ValueError: knobs out of range
        print(f"error: {err}", file=sys.stderr)
        return 2
    for split in ("train", "val"):
        s = stats[split]
        print(f"{split}: {s['images']} images, {s['boxes']} boxes -> {args.out}/{split}.json")
    print(f"speed: {stats['images_per_second']:.0f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
