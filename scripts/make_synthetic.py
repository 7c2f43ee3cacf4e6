"""Generate the synthetic shapes dataset (COCO format) that `make train` and the loss study use.

    python scripts/make_synthetic.py --out data/synthetic
    python scripts/make_synthetic.py --out /tmp/syn --num-train 200 --num-val 50 --mean-objects 12 --noise-std 16

Writes {out}/train.json, {out}/val.json and {out}/images/{train,val}/*.jpg (file_name relative to
{out}/images); deterministic by --seed. See detector/data/synthetic.py for what is drawn.
Prints the measured generation speed (images/s) at the end.
"""

from __future__ import annotations

import argparse
import sys

from detector.data.errors import DatasetError
from detector.data.synthetic import SyntheticSpec, make_synthetic

_DEFAULTS = SyntheticSpec()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--out", required=True, help="destination folder")
    add("--num-train", type=int, default=2000, help="training images")
    add("--num-val", type=int, default=300, help="validation images")
    add("--seed", type=int, default=0, help="the same seed writes the same dataset")
    add("--image-size", type=int, default=_DEFAULTS.image_size, help="side of the square images, px")
    add("--mean-objects", type=float, default=_DEFAULTS.mean_objects, help="mean objects per non-empty image")
    add("--max-objects", type=int, default=_DEFAULTS.max_objects, help="most objects per image")
    add("--min-object-size", type=int, default=_DEFAULTS.min_object_size, help="smallest object, px")
    add("--max-object-size", type=int, default=_DEFAULTS.max_object_size, help="largest object, px")
    add("--num-distractors", type=float, default=_DEFAULTS.num_distractors, help="mean hard negatives per image")
    add("--num-lines", type=float, default=_DEFAULTS.num_lines, help="mean clutter lines per image")
    add("--num-blobs", type=float, default=_DEFAULTS.num_blobs, help="mean background blobs per image")
    add("--noise-std", type=float, default=_DEFAULTS.noise_std, help="pixel noise standard deviation (0-255)")
    add("--empty-fraction", type=float, default=_DEFAULTS.empty_fraction, help="share of images with no object")
    add("--min-contrast", type=int, default=_DEFAULTS.min_contrast, help="least RGB L1 distance object/background")
    add("--jpeg-quality", type=int, default=_DEFAULTS.jpeg_quality, help="JPEG quality")
    add("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        stats = make_synthetic(
            args.out, num_train=args.num_train, num_val=args.num_val, seed=args.seed,
            progress=not args.no_progress, image_size=args.image_size, mean_objects=args.mean_objects,
            max_objects=args.max_objects, min_object_size=args.min_object_size,
            max_object_size=args.max_object_size, num_distractors=args.num_distractors,
            num_lines=args.num_lines, num_blobs=args.num_blobs, noise_std=args.noise_std,
            empty_fraction=args.empty_fraction, min_contrast=args.min_contrast, jpeg_quality=args.jpeg_quality,
        )  # fmt: skip
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
