"""keras-retinanet CSV datasets: an annotations CSV and a class list CSV.

    annotations.csv (no header), one row per box, paths relative to the CSV's folder:
        images/a.jpg,12,30,88,120,cat
        images/a.jpg,40,52,90,140,dog
        images/b.jpg,,,,,                 # an image without boxes
    classes.csv:
        cat,0
        dog,1

Boxes are x1, y1, x2, y2 in absolute pixels (XYXY, as inside). Classes become labels 0..K-1 in
increasing id order, category ids 1..K in the same order. Images keep the order of their first
row; the rows of one image need not be adjacent.

Input handling:
- refused in one line naming the file and row: a missing file, a row of another number of fields,
  a coordinate that is not a number, a class not in the class list, a box row with an empty
  field, a class file with repeated names or ids, an id that is not an integer, an absolute or
  '..' image path;
- counted and reported in one DatasetWarning: the box rule's counts (annotations.py), and
  unreadable images (left out).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from detector.data.annotations import AnnotationTable
from detector.data.coco import check_relative_path
from detector.data.dataset import Transform
from detector.data.errors import DatasetError, IssueCounter
from detector.data.images import read_image_size
from detector.data.table_dataset import TableDataset, select_images


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """(row number, fields) of every non-blank row of a CSV file."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [(n, [v.strip() for v in row]) for n, row in enumerate(csv.reader(f), start=1) if any(v.strip() for v in row)]
    except FileNotFoundError:
        raise DatasetError(path, "CSV file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(path, f"cannot read CSV ({err})") from None


def read_csv_classes(path: str | os.PathLike) -> list[str]:
    """The class names of a `class_name,id` file in label order (increasing id)."""
    path = Path(path)
    by_id: dict[int, str] = {}
    for number, row in _rows(path):
        if len(row) != 2 or not row[0]:
            raise DatasetError(path, f"row {number}: expected 'class_name,id', got {','.join(row)[:60]!r}")
        name, value = row
        try:
            class_id = int(value)
        except ValueError:
            raise DatasetError(path, f"row {number}: class id {value[:20]!r} is not an integer") from None
        if class_id in by_id or name in by_id.values():
            raise DatasetError(path, f"row {number}: repeated class name or id ({name!r}, {class_id})")
        by_id[class_id] = name
    if not by_id:
        raise DatasetError(path, "no classes")
    return [by_id[k] for k in sorted(by_id)]


class CSVDetection(TableDataset):
    """A keras-retinanet CSV dataset (see the module doc).

    Args:
        ann_file: the annotations CSV; image paths are relative to its folder.
        class_file: the `class_name,id` CSV.
        transforms, drop_empty, max_images, seed: as `COCODetection`.
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        class_file: str | os.PathLike,
        *,
        transforms: Transform | None = None,
        drop_empty: bool = False,
        max_images: int | None = None,
        seed: int = 0,
    ) -> None:
        self.ann_file = Path(ann_file)
        class_names = read_csv_classes(class_file)
        issues = IssueCounter(self.ann_file)
        table = self._build_table(class_names, issues)
        table = select_images(table, drop_empty, max_images, seed)
        issues.warn_summary()
        super().__init__(table=table, image_root=self.ann_file.parent, class_names=class_names,
                         label_to_category_id=list(range(1, len(class_names) + 1)), transforms=transforms)

    def _build_table(self, class_names: list[str], issues: IssueCounter) -> AnnotationTable:
        label_of = {name: label for label, name in enumerate(class_names)}
        image_index: dict[str, int] = {}
        box_image, boxes, labels = [], [], []
        for number, row in _rows(self.ann_file):
            if len(row) != 6:
                raise DatasetError(self.ann_file, f"row {number}: expected 'path,x1,y1,x2,y2,class', got {len(row)} fields")
            name = check_relative_path(row[0], self.ann_file, what=f"row {number}: image path")
            index = image_index.setdefault(name, len(image_index))
            if not any(row[1:]):
                continue  # an image without boxes
            if not all(row[1:]):
                raise DatasetError(self.ann_file, f"row {number}: a box row needs x1,y1,x2,y2 and a class "
                                   "(an image without boxes is 'path,,,,,')")
            try:
                box = [float(v) for v in row[1:5]]
            except ValueError:
                raise DatasetError(self.ann_file, f"row {number}: coordinates must be numbers, got {row[1:5]}") from None
            if row[5] not in label_of:
                raise DatasetError(self.ann_file, f"row {number}: unknown class {row[5][:40]!r} (classes: {class_names})")
            box_image.append(index)
            boxes.append(box)
            labels.append(label_of[row[5]])
        names = list(image_index)
        sizes = np.zeros((len(names), 2), dtype=np.int64)
        readable = np.ones(len(names), dtype=bool)
        for i, name in enumerate(names):
            try:
                sizes[i] = read_image_size(self.ann_file.parent / name)
            except DatasetError:
                readable[i] = False
        issues.add("unreadable image (left out)", int((~readable).sum()))
        box_image_array = np.asarray(box_image, dtype=np.int64)
        keep = readable[box_image_array]  # (B,) the boxes of readable images
        new_index = np.cumsum(readable) - 1  # image -> its row among the readable ones
        return AnnotationTable.build(
            file_names=[n for n, ok in zip(names, readable) if ok],
            image_ids=np.arange(1, int(readable.sum()) + 1, dtype=np.int64),
            sizes=sizes[readable],
            box_image_index=new_index[box_image_array[keep]],
            boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[keep],
            labels=np.asarray(labels, dtype=np.int64)[keep],
            ignore=np.zeros(int(keep.sum()), dtype=bool),
            issues=issues,
        )
