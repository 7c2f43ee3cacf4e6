"""YOLO-format datasets (Ultralytics, Roboflow, CVAT and labelImg exports): a data YAML, images/ and labels/.

The data YAML (Ultralytics' layout):
    path: ../datasets/shapes     # the dataset root; relative to the YAML's folder; default that folder
    train: images/train          # a folder of images (searched recursively), a .txt list of image
    val: images/val              #   paths, or a list of either; relative to `path`
    test: images/test            # optional
    nc: 3                        # optional; must agree with names
    names: [circle, square, star]   # or a dict {0: circle, 1: square, 2: star} (ids 0..nc-1)

Paths in a list file are relative to the list file's folder (Ultralytics' "./" lines) unless
absolute. A split path that does not exist and starts with "../" is also tried without it
(Roboflow's exports write "../train/images" next to a data.yaml that sits in the root).

Labels: the label file of `.../images/x/a.jpg` is `.../labels/x/a.txt` (the last "images" folder
of the path becomes "labels"; a path without one keeps the txt beside the image), one line per
object, `class cx cy w h`, normalised to [0, 1] by the image's width and height; a line of more
than four coordinates (`class x1 y1 x2 y2 ...`) is a polygon and gives its bounding box. Class k
is label k; category ids are 1..K.

Input handling:
- refused in one line naming the file: a missing or malformed YAML, no or ambiguous `names`
  (nc disagreeing, dict keys other than 0..nc-1, repeated names), a missing split path, a label
  line that is not numbers or has another number of fields, a class id that is not an integer;
- counted and reported in one DatasetWarning: a missing or empty label file (a background image,
  kept), a label file without an image (ignored), a class id outside names (box dropped), a box
  with coordinates outside [0, 1] (then the box rule: clipped, or dropped when nothing is left),
  an unreadable image (left out), and the box rule's own counts (annotations.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from detector.data.annotations import AnnotationTable
from detector.data.dataset import Transform
from detector.data.errors import DatasetError, IssueCounter
from detector.data.images import IMAGE_SUFFIXES, read_image_size
from detector.data.table_dataset import TableDataset, select_images

SPLITS = ("train", "val", "test")
#: labelImg writes its class list beside the label files: not a label file without an image.
LABELIMG_CLASSES = "classes.txt"


def read_data_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The data YAML as a dict; a missing, malformed or non-mapping file raises `DatasetError` naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / "data.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(path, "data YAML not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(path, f"cannot read data YAML ({err})") from None
    except yaml.YAMLError as err:
        raise DatasetError(path, f"malformed YAML ({str(err).splitlines()[0]})") from None
    except RecursionError:
        raise DatasetError(path, "malformed YAML (nested too deep)") from None
    except ValueError as err:  # a number of more digits than Python converts
        raise DatasetError(path, f"malformed YAML ({str(err).splitlines()[0][:80]})") from None
    if not isinstance(data, dict):
        raise DatasetError(path, f"a data YAML is a mapping (path, train, val, names), got {type(data).__name__}")
    return data


def data_yaml_path(path: str | os.PathLike) -> Path:
    """The YAML itself, or `data.yaml` in a folder."""
    path = Path(path)
    return path / "data.yaml" if path.is_dir() else path


def yolo_class_names(data: dict[str, Any], source: str | os.PathLike) -> list[str]:
    """The class names in label order from `names` (a list, or a dict of ids 0..nc-1) and `nc`."""
    names = data.get("names")
    if isinstance(names, dict):
        keys = list(names)
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in keys) or sorted(keys) != list(range(len(keys))):
            raise DatasetError(source, f"names: a dict's keys must be the class ids 0..{len(keys) - 1}, got {keys[:5]}")
        names = [names[k] for k in range(len(keys))]
    if not isinstance(names, list) or not names:
        raise DatasetError(source, "names: a non-empty list of class names (or a dict id: name) is required")
    if not all(isinstance(n, (str, int, float)) and not isinstance(n, bool) and str(n).strip() for n in names):
        raise DatasetError(source, "names: every class name must be a non-empty string")
    names = [str(n) for n in names]
    if len(set(names)) != len(names):
        raise DatasetError(source, f"names: repeated class names in {names}")
    nc = data.get("nc")
    if nc is not None and (not isinstance(nc, int) or isinstance(nc, bool) or nc != len(names)):
        raise DatasetError(source, f"nc is {nc!r} but names lists {len(names)} classes")
    return names


def dataset_root(data: dict[str, Any], yaml_file: Path) -> Path:
    """`path` of the YAML, relative to the YAML's folder; that folder when absent."""
    value = data.get("path")
    if value is None or value == "":
        return yaml_file.parent
    if not isinstance(value, str):
        raise DatasetError(yaml_file, f"path must be a string, got {value!r}")
    return yaml_file.parent / value


def _resolve(root: Path, value: str) -> Path:
    path = root / value
    if not path.exists() and value.startswith("../") and (root / value[3:]).exists():
        return root / value[3:]  # Roboflow's layout, as Ultralytics reads it
    return path


def split_images(data: dict[str, Any], split: str, yaml_file: Path) -> list[Path]:
    """The image files of one split, in a stable order (folders sorted, list files in their order)."""
    spec = data.get(split)
    if spec is None:
        raise DatasetError(yaml_file, f"no {split!r} split in the data YAML")
    specs = spec if isinstance(spec, list) else [spec]
    if not specs or not all(isinstance(s, str) and s for s in specs):
        raise DatasetError(yaml_file, f"{split}: a path or a list of paths, got {spec!r}")
    root = dataset_root(data, yaml_file)
    images: list[Path] = []
    for value in specs:
        path = _resolve(root, value)
        if path.is_dir():
            images += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file() and path.suffix.lower() == ".txt":
            images += _list_file(path)
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        else:
            raise DatasetError(path, f"{split} split: no such image folder or list file")
    return images


def _list_file(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(path, f"cannot read image list ({err})") from None
    return [path.parent / line.strip() for line in lines if line.strip()]


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last `images` folder of the path becomes `labels`, the suffix `.txt`."""
    parts = list(image.parts)
    if "images" in parts[:-1]:
        at = len(parts) - 2 - parts[-2::-1].index("images")
        parts[at] = "labels"
    return Path(*parts).with_suffix(".txt")


def parse_label_file(path: Path, num_classes: int, issues: IssueCounter) -> tuple[np.ndarray, np.ndarray]:
    """(labels (M,) int64, boxes (M, 4) float64 normalised XYXY corners) of one label file.

    A missing or empty file gives no box (counted as a background image).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(path, f"cannot read label file ({err})") from None
    labels, boxes = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise DatasetError(path, f"line {number}: expected numbers 'class cx cy w h', got {line.strip()[:60]!r}") from None
        coords = values[1:]
        if len(coords) != 4 and (len(coords) < 6 or len(coords) % 2):
            raise DatasetError(path, f"line {number}: expected 'class cx cy w h' or a polygon 'class x1 y1 x2 y2 x3 y3 "
                               f"...', got {len(fields)} fields")
        cls = values[0]
        if not (np.isfinite(cls) and cls == int(cls)):
            raise DatasetError(path, f"line {number}: class id {fields[0]!r} is not an integer")
        if not 0 <= cls < num_classes:
            issues.add("box with a class id outside names (dropped)")
            continue
        if len(coords) == 4:
            box = coords
        else:
            xs, ys = np.asarray(coords[0::2]), np.asarray(coords[1::2])
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max(), ys.max()
            box = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]  # as a box line would write it
        labels.append(int(cls))
        boxes.append(box)
    boxes_array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    half = boxes_array[:, 2:] / 2
    corners = np.concatenate([boxes_array[:, :2] - half, boxes_array[:, :2] + half], axis=1)
    with np.errstate(invalid="ignore"):
        outside = ~((corners >= 0) & (corners <= 1)).all(axis=1) & np.isfinite(corners).all(axis=1)
    issues.add("box with coordinates outside [0, 1] (clipped or dropped by the box rule)", int(outside.sum()))
    if not labels:
        issues.add("image without labels (a missing or empty txt: background)")
    return np.asarray(labels, dtype=np.int64), corners


def orphan_labels(images: list[Path]) -> list[Path]:
    """Label files in the split's label folders that no image of the split has."""
    expected = {label_path(p) for p in images}
    folders = {p.parent for p in expected if p.parent.is_dir()}
    found = {p for folder in folders for p in folder.glob("*.txt") if p.name != LABELIMG_CLASSES}
    return sorted(found - expected)


class YOLODetection(TableDataset):
    """One split of a YOLO dataset (see the module doc).

    Args:
        data_yaml: the Ultralytics data YAML, or a folder holding data.yaml.
        split: "train", "val" or "test".
        transforms, drop_empty, max_images, seed: as `COCODetection`.
    """

    def __init__(
        self,
        data_yaml: str | os.PathLike,
        split: str = "train",
        *,
        transforms: Transform | None = None,
        drop_empty: bool = False,
        max_images: int | None = None,
        seed: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.data_yaml = data_yaml_path(data_yaml)
        data = read_data_yaml(self.data_yaml)
        class_names = yolo_class_names(data, self.data_yaml)
        self.root = dataset_root(data, self.data_yaml)
        images = split_images(data, split, self.data_yaml)
        issues = IssueCounter(f"{self.data_yaml} ({split})")
        table = self._build_table(images, len(class_names), issues)
        issues.add("label file without an image (ignored)", len(orphan_labels(images)))
        table = select_images(table, drop_empty, max_images, seed)
        self.split = split
        issues.warn_summary()
        super().__init__(table=table, image_root=self.root, class_names=class_names,
                         label_to_category_id=list(range(1, len(class_names) + 1)), transforms=transforms)

    def _build_table(self, images: list[Path], num_classes: int, issues: IssueCounter) -> AnnotationTable:
        names, sizes, box_image, boxes, labels = [], [], [], [], []
        for image in images:
            try:
                height, width = read_image_size(image)
            except DatasetError:
                issues.add("unreadable image (left out)")
                continue
            image_labels, corners = parse_label_file(label_path(image), num_classes, issues)
            boxes.append(corners * np.array([width, height, width, height], dtype=np.float64))
            labels.append(image_labels)
            box_image.append(np.full(len(image_labels), len(names), dtype=np.int64))
            names.append(_relative(image, self.root))
            sizes.append((height, width))
        return AnnotationTable.build(
            file_names=names,
            image_ids=np.arange(1, len(names) + 1, dtype=np.int64),
            sizes=np.asarray(sizes, dtype=np.int64).reshape(-1, 2),
            box_image_index=np.concatenate(box_image) if box_image else np.zeros(0, dtype=np.int64),
            boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4)),
            labels=np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64),
            ignore=np.zeros(sum(len(x) for x in labels), dtype=bool),
            issues=issues,
        )


def _relative(path: Path, root: Path) -> str:
    """`path` relative to `root` when inside it (posix), else absolute."""
    try:
        relative = os.path.relpath(path, root)
    except ValueError:  # another drive
        return str(path.resolve())
    return str(path.resolve()) if relative.startswith("..") else Path(relative).as_posix()
