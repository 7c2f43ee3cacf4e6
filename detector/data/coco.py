"""COCO-format detection datasets (COCO 2017, the synthetic set, voc_to_coco output).

Label map: the categories of the JSON sorted by id become labels 0..K-1;
`label_to_category_id[label]` gives the id back (COCO's 80 ids run 1..90 with gaps).

Input handling (see errors.py for the two kinds):
- errors naming the file: the annotation file missing or not valid JSON, a required key
  missing or of the wrong type, duplicate image or category ids, an annotation whose image_id
  or category_id is not declared (unknown category), a bbox that is not 4 numbers, a file_name
  that is absolute or leads outside the image root (refused, never read), and, when an item is
  read, a missing/corrupt/truncated image or one whose size differs from the declared
  width/height (images.py applies EXIF orientation first);
- counted warnings: boxes of zero or negative size (dropped), boxes outside the image (clipped,
  dropped when empty after clipping); see annotations.py.

Crowd boxes (iscrowd=1) are dropped from training targets, and kept in `coco_gt()`.
Images without boxes are kept unless `drop_empty=True`.
"""

from __future__ import annotations

import copy
import os
import posixpath
from collections import Counter
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from detector.io import JSONReadError, read_json
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
    normalized = posixpath.normpath(name.replace("\\", "/"))
    if (
        normalized.startswith("/")
        or normalized == ".."
        or normalized.startswith("../")
        or (len(normalized) > 1 and normalized[1] == ":")  # a Windows drive
    ):
        raise DatasetError(source, f"{what} {name!r} escapes the image root (refused)")
    return normalized


def _require_list(data: dict, key: str, source: Path, required: bool = True) -> list:
    value = data.get(key, None if required else [])
    if not isinstance(value, list):
        raise DatasetError(source, f"'{key}' must be a list" if key in data else f"missing '{key}'")
    return value


def parse_categories(data: dict, source: Path) -> tuple[list[str], list[int]]:
    """(class_names, label_to_category_id) with labels in increasing category id order."""
    categories = _require_list(data, "categories", source)
    try:
        pairs = sorted((int(c["id"]), str(c["name"])) for c in categories)
        np.asarray([cid for cid, _ in pairs], dtype=np.int64)  # ids beyond 64 bits raise OverflowError here
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise DatasetError(source, f"malformed category entry ({err!r})") from None
    ids = [cid for cid, _ in pairs]
    if len(set(ids)) != len(ids):
        raise DatasetError(source, "duplicate category ids")
    if not pairs:
        raise DatasetError(source, "no categories")
    return [name for _, name in pairs], ids


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
        data = load_json(self.ann_file)
        if not isinstance(data, dict):
            raise DatasetError(self.ann_file, "top level must be a JSON object")
        class_names, category_ids = parse_categories(data, self.ann_file)
        issues = IssueCounter(self.ann_file)
        table = self._build_table(data, category_ids, Path(image_root), issues)
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

    def _build_table(
        self, data: dict, category_ids: list[int], image_root: Path, issues: IssueCounter
    ) -> AnnotationTable:
        source = self.ann_file
        images = _require_list(data, "images", source)
        annotations = _require_list(data, "annotations", source, required=False)
        try:
            image_ids = np.array([int(im["id"]) for im in images], dtype=np.int64)
            names = [check_relative_path(im["file_name"], source) for im in images]
        except DatasetError:
            raise
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            raise DatasetError(source, f"malformed image entry ({err!r})") from None
        if len(np.unique(image_ids)) != len(image_ids):
            raise DatasetError(source, "duplicate image ids")
        sizes = np.zeros((len(images), 2), dtype=np.int64)
        for i, im in enumerate(images):
            try:
                sizes[i] = (int(im["height"]), int(im["width"]))
            except OverflowError:  # infinite, or beyond 64 bits
                raise DatasetError(source, f"image {names[i]!r} declares a width or height out of range") from None
            except (KeyError, TypeError, ValueError):
                # Width/height absent (some custom files): read them from the image header.
                sizes[i] = read_image_size(image_root / names[i])
        if (sizes <= 0).any():
            bad = names[int(np.flatnonzero((sizes <= 0).any(axis=1))[0])]
            raise DatasetError(source, f"image {bad!r} declares a non-positive width or height")

        try:
            ann_image = np.array([int(a["image_id"]) for a in annotations], dtype=np.int64)
            ann_category = np.array([int(a["category_id"]) for a in annotations], dtype=np.int64)
            ann_crowd = np.array([bool(a.get("iscrowd", 0)) for a in annotations], dtype=bool)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
            raise DatasetError(source, f"malformed annotation entry ({err!r})") from None
        xywh = self._parse_bboxes(annotations)

        # Map image ids to row numbers without a dict: search in the sorted ids.
        order = np.argsort(image_ids)
        if len(images):
            pos = np.clip(np.searchsorted(image_ids[order], ann_image), 0, len(images) - 1)
            known_image = image_ids[order][pos] == ann_image
        else:
            pos = np.zeros(len(ann_image), dtype=np.int64)
            known_image = np.zeros(len(ann_image), dtype=bool)
        if not known_image.all():
            k = int(np.flatnonzero(~known_image)[0])
            raise DatasetError(
                source, f"annotation {annotations[k].get('id')!r} refers to unknown image_id {int(ann_image[k])}"
            )
        box_image_index = order[pos]

        sorted_cats = np.asarray(category_ids, dtype=np.int64)  # already increasing
        labels = np.clip(np.searchsorted(sorted_cats, ann_category), 0, len(sorted_cats) - 1)
        known_category = sorted_cats[labels] == ann_category
        if not known_category.all():
            k = int(np.flatnonzero(~known_category)[0])
            raise DatasetError(
                source,
                f"annotation {annotations[k].get('id')!r} of image {names[box_image_index[k]]!r} has "
                f"unknown category_id {int(ann_category[k])} (declared: {category_ids})",
            )
        xyxy = xywh.copy()
        xyxy[:, 2:] += xyxy[:, :2]
        return AnnotationTable.build(
            file_names=names,
            image_ids=image_ids,
            sizes=sizes,
            box_image_index=box_image_index,
            boxes=xyxy,
            labels=labels,
            ignore=ann_crowd,
            issues=issues,
        )

    def _parse_bboxes(self, annotations: list[dict]) -> np.ndarray:
        """(B, 4) float64 XYWH; anything but 4 numbers raises naming the annotation file."""
        try:
            raw = [a["bbox"] for a in annotations]
        except (KeyError, TypeError) as err:
            raise DatasetError(self.ann_file, f"annotation without a bbox ({err!r})") from None
        if not raw:
            return np.zeros((0, 4))
        # numpy would read null as NaN and "12" as 12.0: only JSON numbers (int, float) take the bulk path
        if (set(map(type, raw)) <= {list} and set(map(len, raw)) == {4}
                and set(map(type, chain.from_iterable(raw))) <= {int, float}):
            try:
                return np.array(raw, dtype=np.float64)
            except OverflowError:  # an integer beyond float range: named below
                pass
        for a in annotations:  # the error path only: find the offender to name it
            box = a["bbox"]
            if not (isinstance(box, list) and len(box) == 4 and all(_is_float(v) for v in box)):
                raise DatasetError(self.ann_file, f"annotation {a.get('id')!r}: bbox must be 4 numbers, got {box!r}")
        raise DatasetError(self.ann_file, "malformed bbox values")

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
            kept = set(self.table.image_ids.tolist())
            images = [copy.copy(im) for im in data["images"] if int(im["id"]) in kept]
            for im, (h, w) in zip(images, self._sizes_by_id(images)):
                im.setdefault("height", h)
                im.setdefault("width", w)
            annotations = []
            given = [a.get("id") for a in data.get("annotations", [])]
            usable = [i for i in given if _is_id(i)]
            repeated = {i for i, n in Counter(usable).items() if n > 1}
            next_id = max(usable, default=0) + 1
            sizes = dict(zip(self.table.image_ids.tolist(), self.table.sizes.tolist()))  # id -> (h, w)
            for a in data.get("annotations", []):
                if int(a["image_id"]) not in kept or not _valid_gt_box(a["bbox"], sizes[int(a["image_id"])]):
                    continue
                a = dict(a)
                if not _is_id(a.get("id")) or a["id"] in repeated:  # pycocotools keys matches on unique ids
                    a["id"], next_id = next_id, next_id + 1
                a["iscrowd"] = int(bool(a.get("iscrowd", 0)))  # as the training table reads it
                if not _is_real(a.get("area")):
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

    def _sizes_by_id(self, images: list[dict]) -> list[tuple[int, int]]:
        row = {int(i): k for k, i in enumerate(self.table.image_ids.tolist())}
        return [tuple(int(v) for v in self.table.sizes[row[int(im["id"])]]) for im in images]


def _is_float(value: Any) -> bool:
    """A JSON number that fits a float64 (inf and NaN do: they are dropped as counted boxes)."""
    if type(value) not in (int, float):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _is_id(value: Any) -> bool:
    """A usable annotation id: a positive int (pycocotools reads 0 as "unmatched")."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def _valid_gt_box(bbox: list, size: list[int]) -> bool:
    """Whether an XYWH box survives `AnnotationTable.build`: finite, positive size, overlapping the image."""
    x, y, w, h = (float(v) for v in bbox)
    if not all(np.isfinite((x, y, w, h))) or w <= 0 or h <= 0:
        return False
    height, width = size
    return min(x + w, width) > max(x, 0.0) and min(y + h, height) > max(y, 0.0)
