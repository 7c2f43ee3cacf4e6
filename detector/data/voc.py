"""Pascal VOC (and any VOC-format dataset): VOCdevkit layout, XML annotations.

Layout: `{root}/VOC{year}/{Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/{image_set}.txt}`
(`year=None`: `root` itself is the folder holding Annotations/, JPEGImages/ and ImageSets/,
as custom VOC-format datasets often are).

Conventions:
- Coordinates: VOC's 1-based inclusive pixel boxes become (xmin - 1, ymin - 1, xmax, ymax),
  as detectron2 does.
- Labels: `classes` (default the 20 VOC classes) in list order are labels 0..K-1, and their
  category ids in `coco_gt()` / voc_to_coco are 1..K in the same order. An object whose name is
  not in `classes` is an error naming its XML file.
- Difficult objects are dropped from training targets and kept in `coco_gt()` with iscrowd=1
  (ignored by the COCO evaluation, as the VOC protocol ignores them).
- Small subsets: `subset_classes` keeps the images holding at least one object of those
  classes (difficult ones count) and only those classes' boxes, relabelled 0..len-1 in
  `subset_classes` order; `max_images` then draws that many images with a numpy Generator
  seeded by `seed` (kept in image-set order), so a selection is the same on every run.
- Image ids: VOC ids made of digits and '_' become that number ("2008_000123" -> 2008000123,
  "000005" -> 5); otherwise (custom names) the line number in the image-set file.
- The image file is `JPEGImages/{id}.jpg`, or the XML's `<filename>` when it has the same
  stem and another extension (e.g. PNG custom sets). Width and height come from the XML's
  `<size>`, or from the image header when absent or zero.

Errors naming the file: missing VOC{year} folder or image-set file, missing or malformed XML,
missing bndbox fields, unknown class names, ids or file names leading outside the folder.
Counted warnings: boxes of zero or negative size, boxes outside the image (annotations.py).
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from detector.data.annotations import AnnotationTable, coco_from_dict
from detector.data.coco import check_relative_path
from detector.data.dataset import DetectionDataset, Transform, draw_subset, drop_empty_images
from detector.data.errors import DatasetError, IssueCounter
from detector.data.images import read_image_size

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

_NUMERIC_ID = re.compile(r"^[0-9_]+$")


def voc_dataset_dir(root: str | os.PathLike, year: str | int | None) -> Path:
    """The folder holding Annotations/, JPEGImages/ and ImageSets/ (VOCdevkit/VOC{year})."""
    folder = Path(root) if year is None else Path(root) / f"VOC{year}"
    if not folder.is_dir():
        raise DatasetError(
            folder, "VOC folder not found (expected VOCdevkit/VOC<year> holding Annotations/, "
            "JPEGImages/ and ImageSets/Main/; see data/README.md)"
        )
    return folder


def read_image_set(path: Path) -> list[str]:
    """Image ids of an ImageSets/Main/*.txt file (first token of each non-empty line)."""
    if not path.is_file():
        raise DatasetError(path, "image-set file not found")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    for image_id in ids:
        check_relative_path(image_id + ".xml", path, what="image id")
    return ids


def stable_image_ids(ids: list[str]) -> np.ndarray:
    """(n,) int64 ids: the digits of VOC-style names, else line numbers (see module doc)."""
    # at most 18 digits: the number fits int64
    if ids and all(_NUMERIC_ID.match(i) and 0 < len(i.replace("_", "")) <= 18 for i in ids):
        numbers = np.array([int(i.replace("_", "")) for i in ids], dtype=np.int64)
        if len(np.unique(numbers)) == len(numbers):
            return numbers
    return np.arange(len(ids), dtype=np.int64)


_MAX_SIDE = 2**31  # a declared side beyond this is unusable (and would not fit the size table)


def _text(element: ET.Element, tag: str, source: Path, where: str) -> str:
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DatasetError(source, f"{where}: missing <{tag}>")
    return child.text.strip()


def parse_voc_xml(path: Path) -> dict[str, Any]:
    """One VOC annotation file as {"filename", "size" (h, w) or None, "objects": [...]}.

    Each object is {"name": str, "difficult": bool, "box": (xmin, ymin, xmax, ymax)} with the
    file's 1-based coordinates, unconverted.
    """
    if not path.is_file():
        raise DatasetError(path, "annotation file not found")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DatasetError(path, f"malformed XML ({err})") from None
    for element in root.iter():  # a default xmlns="..." makes every tag "{uri}name": read the names
        if isinstance(element.tag, str) and element.tag.startswith("{"):
            element.tag = element.tag.split("}", 1)[1]
    size = None
    size_el = root.find("size")
    if size_el is not None:
        try:
            w = int(float(size_el.findtext("width", "0").strip() or 0))
            h = int(float(size_el.findtext("height", "0").strip() or 0))
            size = (h, w) if 0 < h < _MAX_SIDE and 0 < w < _MAX_SIDE else None
        except (ValueError, OverflowError):  # OverflowError: inf
            size = None  # unusable <size>: read it from the image header
    filename_el = root.find("filename")
    objects = []
    for k, obj in enumerate(root.findall("object")):
        where = f"object {k}"
        name = _text(obj, "name", path, where)
        difficult_text = obj.findtext("difficult", "0").strip() or "0"
        try:
            difficult = bool(int(difficult_text))
        except ValueError:
            raise DatasetError(path, f"{where}: <difficult> must be 0 or 1") from None
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetError(path, f"{where} ({name}): missing <bndbox>")
        texts = [_text(bndbox, tag, path, f"{where} ({name})") for tag in ("xmin", "ymin", "xmax", "ymax")]
        try:
            box = tuple(float(t) for t in texts)
        except ValueError:
            raise DatasetError(path, f"{where} ({name}): bndbox coordinates must be numbers, got {texts}") from None
        objects.append({"name": name, "difficult": difficult, "box": box})
    filename = filename_el.text.strip() if filename_el is not None and filename_el.text else None
    return {"filename": filename, "size": size, "objects": objects}


class VOCDetection(DetectionDataset):
    """A VOC image set, optionally a small deterministic subset (see the module doc).

    Args:
        root: the VOCdevkit folder (or, with year=None, the dataset folder itself).
        year: "2007", "2012", ... or None.
        image_set: "train", "val", "trainval", "test" (any ImageSets/Main/*.txt name).
        classes: the dataset's class names in label order; default the 20 VOC classes.
        subset_classes: keep only images with these classes and only their boxes.
        max_images: keep at most this many images, drawn with `seed`.
        seed: seed of the `max_images` draw.
        transforms: optional (image, boxes, labels) -> (image, boxes, labels).
        drop_empty: drop images without any training box (difficult boxes do not count);
            applied before the `max_images` draw.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        year: str | int | None = "2007",
        image_set: str = "trainval",
        *,
        classes: list[str] | tuple[str, ...] | None = None,
        subset_classes: list[str] | tuple[str, ...] | None = None,
        max_images: int | None = None,
        seed: int = 0,
        transforms: Transform | None = None,
        drop_empty: bool = False,
    ) -> None:
        self.dataset_dir = voc_dataset_dir(root, year)
        self.image_set_file = self.dataset_dir / "ImageSets" / "Main" / f"{image_set}.txt"
        all_classes = list(VOC_CLASSES if classes is None else classes)
        if len(set(all_classes)) != len(all_classes) or not all_classes:
            raise DatasetError(self.dataset_dir, f"classes must be distinct and non-empty: {all_classes}")
        ids = read_image_set(self.image_set_file)
        numeric_ids = stable_image_ids(ids)
        issues = IssueCounter(self.image_set_file)

        if subset_classes is None and not drop_empty:
            # Cheap path: draw first, then parse only the drawn files.
            chosen = draw_subset(len(ids), max_images, seed)
            table = self._parse(ids, numeric_ids, chosen, all_classes, issues)
            class_names = all_classes
        else:
            table = self._parse(ids, numeric_ids, np.arange(len(ids)), all_classes, issues)
            class_names = all_classes
            if subset_classes is not None:
                table, class_names = self._subset(table, all_classes, list(subset_classes))
            if drop_empty:
                table = drop_empty_images(table)
            table = table.select(draw_subset(len(table), max_images, seed))
        issues.warn_summary()
        self.year = None if year is None else str(year)
        self.image_set = image_set
        self._coco_gt: COCO | None = None
        super().__init__(
            table=table,
            image_root=self.dataset_dir / "JPEGImages",
            class_names=class_names,
            label_to_category_id=list(range(1, len(class_names) + 1)),
            transforms=transforms,
        )

    def _subset(
        self, table: AnnotationTable, all_classes: list[str], subset: list[str]
    ) -> tuple[AnnotationTable, list[str]]:
        unknown = [c for c in subset if c not in all_classes]
        if unknown or not subset or len(set(subset)) != len(subset):
            raise DatasetError(
                self.dataset_dir, f"subset classes {subset} must be distinct names from {all_classes}"
            )
        keep_labels = np.zeros(len(all_classes), dtype=bool)
        new_labels = np.zeros(len(all_classes), dtype=np.int64)
        for new, name in enumerate(subset):
            keep_labels[all_classes.index(name)] = True
            new_labels[all_classes.index(name)] = new
        table = table.select_labels(keep_labels, new_labels)
        return table.select(np.flatnonzero(np.diff(table.offsets) > 0)), subset

    def _parse(
        self,
        ids: list[str],
        numeric_ids: np.ndarray,
        chosen: np.ndarray,
        classes: list[str],
        issues: IssueCounter,
    ) -> AnnotationTable:
        class_index = {name: label for label, name in enumerate(classes)}
        annotations_dir = self.dataset_dir / "Annotations"
        image_dir = self.dataset_dir / "JPEGImages"
        names, sizes = [], []
        box_image, boxes, labels, difficult = [], [], [], []
        for row, k in enumerate(chosen.tolist()):
            xml_path = annotations_dir / f"{ids[k]}.xml"
            parsed = parse_voc_xml(xml_path)
            file_name = f"{ids[k]}.jpg"
            if parsed["filename"] and Path(parsed["filename"]).stem == ids[k]:
                file_name = check_relative_path(parsed["filename"], xml_path, what="<filename>")
            names.append(file_name)
            sizes.append(parsed["size"] or read_image_size(image_dir / file_name))
            for obj in parsed["objects"]:
                if obj["name"] not in class_index:
                    raise DatasetError(xml_path, f"unknown class {obj['name']!r} (classes: {classes})")
                box_image.append(row)
                boxes.append(obj["box"])
                labels.append(class_index[obj["name"]])
                difficult.append(obj["difficult"])
        boxes_xyxy = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        boxes_xyxy[:, :2] -= 1.0  # VOC's 1-based inclusive corners -> (xmin - 1, ymin - 1, xmax, ymax)
        return AnnotationTable.build(
            file_names=names,
            image_ids=numeric_ids[chosen],
            sizes=np.asarray(sizes, dtype=np.int64).reshape(-1, 2),
            box_image_index=np.asarray(box_image, dtype=np.int64),
            boxes=boxes_xyxy,
            labels=np.asarray(labels, dtype=np.int64),
            ignore=np.asarray(difficult, dtype=bool),
            issues=issues,
        )

    def coco_dict(self) -> dict[str, Any]:
        """This selection as a COCO instances dict (what scripts/voc_to_coco.py writes).

        XYWH boxes from the converted XYXY ones, area = w * h, category ids 1..K in class-list
        order, iscrowd = difficult, file_name relative to JPEGImages (e.g. "000001.jpg").
        """
        data = self.table.to_coco_dict(self.class_names, self.label_to_category_id)
        data["info"] = {"description": f"converted from {self.image_set_file}"}
        return data

    def coco_gt(self) -> COCO:
        """Ground truth as a pycocotools COCO object, built in memory with `coco_dict()`."""
        if self._coco_gt is None:
            self._coco_gt = coco_from_dict(self.coco_dict())
        return self._coco_gt


def voc_to_coco(
    root: str | os.PathLike,
    year: str | int | None,
    image_set: str,
    *,
    classes: list[str] | None = None,
    subset_classes: list[str] | None = None,
    max_images: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """A VOC selection as a COCO instances dict; see `VOCDetection` and `VOCDetection.coco_dict`."""
    dataset = VOCDetection(
        root, year, image_set, classes=classes, subset_classes=subset_classes,
        max_images=max_images, seed=seed,
    )  # fmt: skip
    return dataset.coco_dict()
