"""`detector convert`: a dataset split from one format to another, through the one AnnotationTable.

    detector convert --from voc --to coco --root data/BCCD --split train --classes RBC WBC Platelets --out bccd_train.json
    detector convert --from yolo --to coco --root shapes/data.yaml --split val --out shapes_val.json
    detector convert --from csv --to yolo --root mydata --split train --out mydata_yolo
    detector convert --from coco --to yolo --root data/coco --ann annotations/instances_val2017.json --images val2017 \
        --split val --out coco_yolo

Sources (--root DIR): voc, a folder holding Annotations/, JPEGImages/, ImageSets/Main/{split}.txt
(--classes names a custom set's classes); yolo, an Ultralytics data YAML or its folder; csv, a
folder holding {split}.csv and classes.csv (or --ann, --class-file); coco, --ann (a COCO JSON) and
--images (the image folder), relative to --root.

Targets:
- coco: --out FILE.json, an instances JSON: XYWH boxes, category ids of the source (COCO) or
  1..K, iscrowd from crowd/difficult flags; file_name relative to the source's image folder,
  which the command prints (pass it as --data.train_images / val_images).
- yolo: --out DIR in Ultralytics' layout: DIR/images/{split}/..., DIR/labels/{split}/... .txt
  (`class cx cy w h`, normalised, 6 decimals: under 0.001 px off below 2,000 px; an image
  without boxes gets an empty txt) and DIR/data.yaml (absolute `path`, each converted split,
  `names` as a dict, `nc`). Converting another split into the same DIR adds it to data.yaml; a
  different class list is refused. Images are hard-linked, or copied across file systems. YOLO
  has no crowd/difficult flag: such boxes are left out, and counted in the summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import yaml

from .coco import COCODetection
from .csv_dataset import CSVDetection
from .dataset import DetectionDataset
from .errors import DatasetError
from .voc import VOCDetection
from .yolo import YOLODetection, data_yaml_path, read_data_yaml, yolo_class_names

SOURCES = ("voc", "yolo", "csv", "coco")
TARGETS = ("coco", "yolo")


def load_source(fmt: str, root: str | os.PathLike, split: str, *, ann: str | None = None,
                images: str | None = None, class_file: str | None = None,
                classes: list[str] | None = None) -> DetectionDataset:
    """One split of a dataset in format `fmt` (see the module doc for what `root` holds)."""
    root = Path(root)
    if fmt == "voc":
        return VOCDetection(root, None, split, classes=classes)
    if fmt == "yolo":
        return YOLODetection(root, split)
    if fmt == "csv":
        return CSVDetection(root / (ann or f"{split}.csv"), root / (class_file or "classes.csv"))
    if fmt == "coco":
        if ann is None:
            raise DatasetError(root, "--from coco needs --ann, the COCO JSON (relative to --root)")
        return COCODetection(root / ann, root / (images or "."))
    raise ValueError(f"format must be one of {SOURCES}, got {fmt!r}")


def write_coco(dataset: DetectionDataset, out: str | os.PathLike) -> dict:
    """The split as a COCO instances JSON at `out`; returns the dict."""
    data = dataset.table.to_coco_dict(dataset.class_names, dataset.label_to_category_id)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data))
    return data


def yolo_lines(boxes: np.ndarray, labels: np.ndarray, height: int, width: int) -> str:
    """YOLO label text of boxes (M, 4) XYXY pixels: `class cx cy w h` normalised, one line a box."""
    scale = np.array([width, height, width, height], dtype=np.float64)
    xyxy = boxes.astype(np.float64) / scale
    cxcywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    return "".join(f"{int(k)} {' '.join(f'{v:.6f}' for v in row)}\n" for k, row in zip(labels, cxcywh))


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)


def write_yolo(dataset: DetectionDataset, out: str | os.PathLike, split: str) -> dict:
    """The split in Ultralytics' layout under `out` (see the module doc); returns counts."""
    out = Path(out)
    yaml_file = out / "data.yaml"
    names = list(dataset.class_names)
    data = read_data_yaml(yaml_file) if yaml_file.is_file() else {}
    if data and yolo_class_names(data, yaml_file) != names:
        raise DatasetError(yaml_file, f"holds other classes ({yolo_class_names(data, yaml_file)}) than this "
                           f"split ({names}); convert into another folder")
    table, seen, left_out = dataset.table, set(), 0
    for i in range(len(table)):
        name = Path(str(table.file_names[i]))
        relative = Path(name.name) if name.is_absolute() else name
        if relative in seen:
            raise DatasetError(dataset.image_path(i), f"two images would both be images/{split}/{relative}")
        seen.add(relative)
        _place(dataset.image_path(i), out / "images" / split / relative)
        boxes, labels, ignore = table.boxes_of(i)
        left_out += int(ignore.sum())
        height, width = (int(v) for v in table.sizes[i])
        label_file = out / "labels" / split / relative.with_suffix(".txt")
        label_file.parent.mkdir(parents=True, exist_ok=True)
        label_file.write_text(yolo_lines(boxes[~ignore], labels[~ignore], height, width))
    data.update({"path": str(out.resolve()), split: f"images/{split}", "nc": len(names),
                 "names": dict(enumerate(names))})
    ordered = {k: data[k] for k in ("path", "train", "val", "test") if k in data}
    ordered.update({k: v for k, v in data.items() if k not in ordered})
    yaml_file.write_text(yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True))
    return {"images": len(table), "boxes": int((~table.ignore).sum()), "left_out": left_out}


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--from", dest="source", required=True, choices=SOURCES, help="the source format")
    parser.add_argument("--to", dest="target", required=True, choices=TARGETS, help="the format to write")
    parser.add_argument("--root", required=True, help="the source dataset (see above)")
    parser.add_argument("--split", default="train", help="the split (VOC: the image set): train, val, test, ...")
    parser.add_argument("--out", required=True, help="coco: the JSON to write; yolo: the dataset folder")
    parser.add_argument("--ann", help="coco: the JSON; csv: the annotations CSV (default {split}.csv); relative to --root")
    parser.add_argument("--images", help="coco: the image folder, relative to --root (default --root)")
    parser.add_argument("--class-file", help="csv: the class_name,id file (default classes.csv)")
    parser.add_argument("--classes", nargs="+", metavar="NAME", help="voc: the class names of a custom set")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    from ..cli import one_line_errors

    args = build_parser(prog).parse_args(argv)
    with one_line_errors():
        dataset = load_source(args.source, args.root, args.split, ann=args.ann, images=args.images,
                              class_file=args.class_file, classes=args.classes)
        if args.target == "coco":
            data = write_coco(dataset, args.out)
            print(f"wrote {args.out}: {len(data['images'])} images, {len(data['annotations'])} boxes, "
                  f"{len(data['categories'])} categories; file_name values are relative to {dataset.image_root}")
        else:
            counts = write_yolo(dataset, args.out, args.split)
            dropped = f"; {counts['left_out']} crowd/difficult boxes left out (YOLO has no such flag)" \
                if counts["left_out"] else ""
            print(f"wrote {data_yaml_path(args.out)} ({args.split}): {counts['images']} images, "
                  f"{counts['boxes']} boxes{dropped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
