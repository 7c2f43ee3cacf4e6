"""What every detection dataset of the package shares: the item contract and the label map.

An item is a dict:
    "image":     (H, W, 3) uint8 RGB numpy array (after transforms: the transformed image)
    "boxes":     (M, 4) float32 XYXY absolute pixels of "image"
    "labels":    (M,) int64 in 0..K-1
    "image_id":  int, the COCO image id (VOC: a stable int, see voc.py)
    "orig_size": (h, w) of the decoded image before transforms
    "skipped":   only when images were unreadable and on_bad_image="skip": their paths (the
                 item is then the next readable image's)

Training targets never contain crowd (COCO iscrowd=1) or difficult (VOC) boxes: they are
dropped here, not passed to the matcher as "ignore" (torchvision's reference scripts drop crowd
boxes too; anchors on such a region then train as background, a small cost for one target
format). They stay in `coco_gt()`, with iscrowd=1, where the COCO evaluation ignores them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from detector.data.annotations import AnnotationTable
from detector.data.errors import DatasetError, DatasetWarning
from detector.model.preprocess import ImageTooThinError
from detector.data.images import load_rgb_image

# (image, boxes (M, 4), labels (M,)) -> the same three, transformed.
Transform = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


class DetectionDataset(Dataset):
    """A map-style dataset over an `AnnotationTable`; subclasses build the table.

    Attributes:
        class_names: list[str], the name of each label, in label order.
        label_to_category_id: list[int], the category id of each label (COCO ids, or 1..K).
        image_root: folder the table's file names are relative to.
        transforms: optional callable (image, boxes, labels) -> (image, boxes, labels).
        on_bad_image: "error" (default) raises the `DatasetError` of an image that cannot be
            read; "skip" reads the next readable image in its place instead, so that a batch keeps
            its size, warns once per file, and lists the skipped files in the item's "skipped".
            The dataset scan (scan.py) leaves out images that are bad before the run; this covers
            an image that goes bad during it.
    """

    on_bad_image: str = "error"

    def __init__(
        self,
        *,
        table: AnnotationTable,
        image_root: str | os.PathLike,
        class_names: list[str],
        label_to_category_id: list[int],
        transforms: Transform | None = None,
    ) -> None:
        self.table = table
        self.image_root = Path(image_root)
        self.class_names = list(class_names)
        self.label_to_category_id = [int(c) for c in label_to_category_id]
        self.transforms = transforms
        self._warned: set[str] = set()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def category_id_to_label(self) -> dict[int, int]:
        return {cid: label for label, cid in enumerate(self.label_to_category_id)}

    @property
    def image_ids(self) -> np.ndarray:
        """(n,) int64 image ids in dataset order."""
        return self.table.image_ids

    def __len__(self) -> int:
        return len(self.table)

    def image_path(self, index: int) -> Path:
        return self.image_root / str(self.table.file_names[index])

    def load_image(self, index: int) -> np.ndarray:
        """The decoded (H, W, 3) uint8 RGB image, checked against its declared size."""
        path = self.image_path(index)
        image = load_rgb_image(path)
        declared = tuple(int(v) for v in self.table.sizes[index])
        if image.shape[:2] != declared:
            raise DatasetError(
                path,
                f"decoded image is {image.shape[0]}x{image.shape[1]} (h x w, EXIF orientation "
                f"applied) but the annotation declares {declared[0]}x{declared[1]}",
            )
        return image

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        skipped: list[str] = []
        for _ in range(len(self)):
            try:
                image = self.load_image(index)
                orig_size = (int(image.shape[0]), int(image.shape[1]))
                boxes, labels = self.table.training_targets(index)
                if self.transforms is not None:
                    try:
                        image, boxes, labels = self.transforms(image, boxes, labels)
                    except ImageTooThinError as err:  # skipped as an unreadable image is
                        raise DatasetError(self.image_path(index), str(err)) from None
                break
            except DatasetError as err:
                if self.on_bad_image != "skip":
                    raise
                skipped.append(str(self.image_path(index)))
                if skipped[-1] not in self._warned:
                    self._warned.add(skipped[-1])
                    warnings.warn(f"{err}; skipped", DatasetWarning, stacklevel=2)
                index = (index + 1) % len(self)  # a deterministic stand-in: resumed runs read the same
        else:
            raise DatasetError(self.image_root, f"none of the {len(self)} images can be read")
        return {
            "image": image,
            "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            "labels": np.asarray(labels, dtype=np.int64).reshape(-1),
            "image_id": int(self.table.image_ids[index]),
            "orig_size": orig_size,
            **({"skipped": skipped} if skipped else {}),
        }

    def coco_gt(self) -> COCO:
        """Ground truth of this dataset's images as a pycocotools COCO object."""
        raise NotImplementedError


def drop_empty_images(table: AnnotationTable) -> AnnotationTable:
    """The table without images that have no training box (crowd/difficult do not count)."""
    return table.select(np.flatnonzero(table.num_training_boxes() > 0))


def draw_subset(n: int, max_images: int | None, seed: int) -> np.ndarray:
    """Indices of at most `max_images` of n images, drawn with a Generator seeded by `seed`.

    The draw is the same on every run for the same (n, max_images, seed); the indices come
    back increasing, so a subset keeps the file's order.
    """
    if max_images is None or max_images >= n:
        return np.arange(n, dtype=np.int64)
    if max_images < 0:
        raise ValueError(f"max_images must be >= 0, got {max_images}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_images, replace=False)).astype(np.int64)
