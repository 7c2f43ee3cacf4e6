"""Write a Pascal VOC selection as a COCO instances JSON, so that one evaluator serves both.

    python scripts/voc_to_coco.py --root data/voc/VOCdevkit --year 2007 --split test --out data/voc/voc07_test.json
    python scripts/voc_to_coco.py --root data/voc/VOCdevkit --year 2007 --split test \
        --classes person car dog --max-images 500 --out data/voc/voc07_test_small.json
    python scripts/voc_to_coco.py --root data/BCCD --year none --split test --classes RBC WBC Platelets --out bccd.json

--classes of VOC's 20 names picks a subset of VOC; names VOC does not have are the classes of a
custom VOC-format dataset (as --class-list, which with --classes picks a subset of a custom set).

Boxes are XYWH from VOC's corners converted as (xmin - 1, ymin - 1, xmax, ymax); area = w * h;
category ids are 1..K in class-list order (--classes when given); difficult objects get
iscrowd=1; file_name is relative to the year folder's JPEGImages (e.g. "000001.jpg").
Input errors end in one line "error: ..." on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from detector.data.errors import DatasetError
from detector.data.voc import VOC_CLASSES, voc_to_coco


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the VOCdevkit folder")
    parser.add_argument("--year", default="2007",
                        help="2007, 2012, ...; 'none' when --root itself holds Annotations/ and JPEGImages/")
    parser.add_argument("--split", default="test", help="image set: train, val, trainval, test")
    parser.add_argument("--classes", nargs="+", metavar="NAME",
                        help="VOC names: keep only images with these classes and only their boxes; other names: "
                             "the classes of a custom dataset (ids 1..K in this order)")
    parser.add_argument("--class-list", nargs="+", metavar="NAME",
                        help="all class names of a custom VOC-format dataset (default: the 20 VOC classes)")
    parser.add_argument("--max-images", type=int, help="draw at most this many images (deterministic by --seed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --max-images draw")
    parser.add_argument("--out", required=True, metavar="FILE.json", help="where to write the COCO JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    year = None if args.year.lower() == "none" else args.year
    class_list, subset = args.class_list, args.classes
    if class_list is None and subset and not set(subset) <= set(VOC_CLASSES):
        class_list, subset = subset, None  # names VOC does not have: the classes of a custom dataset
    try:
        data = voc_to_coco(
            args.root, year, args.split, classes=class_list, subset_classes=subset,
            max_images=args.max_images, seed=args.seed,
        )  # fmt: skip
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data))
    except (DatasetError, OSError) as err:
        hint = ""
        if "unknown class" in str(err):
            hint = "; name every class of a custom dataset: --classes A B C (or --class-list, and --classes for a subset)"
        print(f"error: {err}{hint}", file=sys.stderr)
        return 2
    crowd = sum(a["iscrowd"] for a in data["annotations"])
    print(
        f"wrote {out}: {len(data['images'])} images, {len(data['annotations'])} boxes "
        f"({crowd} difficult -> iscrowd=1), {len(data['categories'])} categories"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
