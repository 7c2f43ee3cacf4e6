"""COCO-format detection datasets (COCO 2017, the synthetic set, voc_to_coco output).

Label map: the categories of the JSON sorted by id become labels 0..K-1;
`label_to_category_id[label]` gives the id back (COCO's 80 ids run 1..90 with gaps).

Input handling (see errors.py for the two kinds):
- errors naming the file: the annotation file missing or not valid JSON, anything the shared
  COCO rule refuses (detector/coco_format.py: a required key missing or of the wrong type, ids
  that are not JSON integers, duplicate image or category ids, an annotation whose image_id or
  category_id is not declared, a bbox that is not 4 numbers), a file without categories, a
  file_name that is absolute or leads outside the image root (refused, never read), and, when an
  item is read, a missing/corrupt/truncated image or one whose size differs from the declared
  width/height (images.py applies EXIF orientation first);
- counted warnings: the boxes the shared `box_rule` calls bad, zero or negative size or not
  finite, or outside the image (dropped), and boxes partly outside (clipped); see annotations.py.
  Scoring uses the same rule on a ground-truth file, with its own policy (evaluation/ground_truth.py).

Crowd boxes (iscrowd=1) are dropped from training targets, and kept in `coco_gt()`.
Images without boxes are kept unless `drop_empty=True`.
"""

from __future__ import annotations

import copy
import os
import posixpath
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from detector.coco_format import (
    GOOD,
    CocoInstances,
    COCOFormatError,
    box_rule,
    check_categories,
    check_coco_instances,
    index_of,
)
from detector.io import JSONReadError, is_finite_real, is_int, read_json
from detector.data.annotations import AnnotationTable, coco_from_dict
from detector.data.dataset import DetectionDataset, Transform, draw_subset, drop_empty_images
from detector.data.errors import DatasetError, IssueCounter
from detector.data.images import read_image_size


def load_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a missing or malformed file raises `DatasetError` naming it."""
    try:
        return read_json(path)
    except JSONReadError as err:
        problem = "annotation file not found" if err.missing else (
            f"malformed JSON ({err.problem})" if err.invalid else f"cannot read annotation file ({err.problem})")
        raise DatasetError(Path(path), problem) from None


def check_relative_path(name: str, source: str | os.PathLike, what: str = "file_name") -> str:
    """Normalised `name` if it stays inside its root; absolute or '..' paths are refused.

    Raises:
        DatasetError: naming `source`, the file that declared the path.
    """
    if not isinstance(name, str) or not name:
        raise DatasetError(source, f"{what} must be a non-empty string, got {name!r}")
    if "\x00" in name:  # no file system allows it; open() would raise a bare ValueError
        raise DatasetError(source, f"{what} {name!r} contains a NUL character")
    normalized = posixpath.normpath(name.replace("\\", "/"))
    if (
        normalized.startswith("/")
        or normalized == ".."
        or normalized.startswith("../")
        or (len(normalized) > 1 and normalized[1] == ":")  # a Windows drive
    ):
        raise DatasetError(source, f"{what} {name!r} escapes the image root (refused)")
    return normalized


def check_instances(data: Any, source: Path) -> CocoInstances:
    """`check_coco_instances` with training's policy (bad boxes returned, to be dropped and counted).

    Raises:
        DatasetError: naming `source`, for anything the shared rule refuses (one line).
    """
    try:
        return check_coco_instances(data, bad_boxes="drop")
    except COCOFormatError as err:
        raise DatasetError(source, str(err)) from None


def parse_categories(data: Any, source: Path) -> tuple[list[str], list[int]]:
    """(class_names, label_to_category_id) with labels in increasing category id order."""
    try:
        return _label_space(*check_categories(data), source)
    except COCOFormatError as err:
        raise DatasetError(source, str(err)) from None


class COCODetection(DetectionDataset):
    """Images and boxes of a COCO instances JSON.

    Args:
        ann_file: the instances JSON.
        image_root: folder that the images' file_name values are relative to.
        transforms: optional (image, boxes, labels) -> (image, boxes, labels), see transforms.py.
        drop_empty: drop images without any training box (crowd boxes do not count).
        max_images: keep at most this many images (after drop_empty), drawn with `seed` and
            kept in file order, for quick experiments on a deterministic subset.
        seed: seed of the `max_images` draw.
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_root: str | os.PathLike,
        *,
        transforms: Transform | None = None,
        drop_empty: bool = False,
        max_images: int | None = None,
        seed: int = 0,
    ) -> None:
        self.ann_file = Path(ann_file)
        coco = check_instances(load_json(self.ann_file), self.ann_file)
        class_names, category_ids = _label_space(coco.category_ids, coco.category_names, self.ann_file)
        issues = IssueCounter(self.ann_file)
        table = self._build_table(coco, Path(image_root), issues)
        if drop_empty:
            table = drop_empty_images(table)
        if max_images is not None:
            table = table.select(draw_subset(len(table), max_images, seed))
        self.drop_empty = drop_empty
        self._coco_gt: COCO | None = None
        issues.warn_summary()
        super().__init__(
            table=table,
            image_root=image_root,
            class_names=class_names,
            label_to_category_id=category_ids,
            transforms=transforms,
        )

    def _build_table(self, coco: CocoInstances, image_root: Path, issues: IssueCounter) -> AnnotationTable:
        names = [check_relative_path(im.get("file_name"), self.ann_file) for im in coco.images]
        sizes = coco.sizes.copy()
        for i in np.flatnonzero((sizes == 0).any(axis=1)):
            # Width/height absent (some custom files): read them from the image header.
            sizes[i] = read_image_size(image_root / names[i])
        return AnnotationTable.build(
            file_names=names,
            image_ids=coco.image_ids,
            sizes=sizes,
            box_image_index=coco.box_image,
            boxes=coco.boxes,
            labels=coco.box_label,
            ignore=coco.crowd,
            issues=issues,
        )

    def coco_gt(self) -> COCO:
        """The file's ground truth, unchanged, restricted to this dataset's images.

        Crowd boxes keep iscrowd=1 and COCO's own `area` (the segment area the official
        small/medium/large ranges use). Missing `area`, `iscrowd` or annotation `id` fields,
        which pycocotools needs, are filled in (w * h, 0, a running number), as are ids that are
        not positive integers or are repeated and areas that are not finite numbers; iscrowd is
        read as the training table reads it (true or false). Boxes the dataset
        dropped as invalid (not finite, zero or negative size, wholly outside the image: the
        counted warning) are left out here too: kept, no detection could match them and each
        would count as a missed object.
        """
        if self._coco_gt is None:
            data = load_json(self.ann_file)
            coco = check_instances(data, self.ann_file)
            image_row = index_of(coco.image_ids, self.table.image_ids)  # file image -> row of a kept image, or -1
            box_row = image_row[coco.box_image]  # (B,)
            box_sizes = np.where(box_row[:, None] >= 0, self.table.sizes[np.maximum(box_row, 0)], np.inf)
            keep = (box_row >= 0) & (box_rule(coco.boxes, box_sizes).problem == GOOD)

            images = []
            for im, row in zip(coco.images, image_row.tolist()):
                if row >= 0:
                    im = copy.copy(im)
                    im.setdefault("height", int(self.table.sizes[row, 0]))
                    im.setdefault("width", int(self.table.sizes[row, 1]))
                    images.append(im)
            given = [a.get("id") for a in coco.annotations]
            usable = [i for i in given if is_int(i) and i > 0]
            repeated = {i for i, n in Counter(usable).items() if n > 1}
            next_id = max(usable, default=0) + 1
            annotations = []
            for k in np.flatnonzero(keep).tolist():
                a = dict(coco.annotations[k])
                # pycocotools keys matches on unique positive ids
                if not (is_int(a.get("id")) and a["id"] > 0) or a["id"] in repeated:
                    a["id"], next_id = next_id, next_id + 1
                a["iscrowd"] = int(coco.crowd[k])  # as the training table reads it
                if not is_finite_real(a.get("area")):
                    a["area"] = float(a["bbox"][2]) * float(a["bbox"][3])
                a["bbox"] = [float(v) for v in a["bbox"]]
                annotations.append(a)
            gt = {
                "images": images,
                "annotations": annotations,
                "categories": data["categories"],
            }
            if "info" in data:
                gt["info"] = data["info"]
            self._coco_gt = coco_from_dict(gt)
        return self._coco_gt


def _label_space(ids: np.ndarray, names: list, source: Path) -> tuple[list[str], list[int]]:
    """(class_names, label_to_category_id) from the checked categories; a file without any is refused."""
    if not len(ids):
        raise DatasetError(source, "no categories")
    return [str(name) for name in names], ids.tolist()
