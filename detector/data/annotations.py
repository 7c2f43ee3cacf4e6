"""The ground truth of a dataset as flat arrays, validated once when the dataset is indexed.

Shape symbols: n images, B boxes in the whole dataset, M boxes of one image.

Every dataset (COCO JSON, VOC XML, the synthetic set) is turned into one `AnnotationTable`:
a handful of numpy arrays rather than one Python object per image. Flat arrays are cheap to
slice and, unlike lists of dicts, are not copied page by page into every DataLoader worker by
reference counting.

Box validation, the rule of detector/coco_format.py's `box_rule` (counted, summarised once per
dataset by `IssueCounter`):
- a box whose width or height is zero, negative or not finite is dropped;
- a box reaching outside its image is clipped to it, and dropped if nothing is left.

Boxes flagged `ignore` (COCO iscrowd=1, VOC difficult=1) are kept in the table, for the
evaluation ground truth, and dropped from training targets by `training_targets`.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from detector.coco_format import GOOD, NEGATIVE_SIZE, NOT_FINITE, OUTSIDE, ZERO_SIZE, box_rule
from detector.data.errors import IssueCounter


@dataclass(frozen=True)
class AnnotationTable:
    """Images and their boxes, grouped by image.

    Attributes:
        file_names: (n,) str, image paths relative to the dataset's image root.
        image_ids: (n,) int64, COCO image ids (or a stable int for VOC).
        sizes: (n, 2) int64, declared (height, width) of each image.
        boxes: (B, 4) float32 XYXY absolute pixels, the boxes of image i in
            boxes[offsets[i]:offsets[i + 1]].
        labels: (B,) int64 contiguous labels 0..K-1.
        ignore: (B,) bool, crowd / difficult boxes: never training targets, iscrowd=1 in the
            evaluation ground truth.
        offsets: (n + 1,) int64.
    """

    file_names: np.ndarray
    image_ids: np.ndarray
    sizes: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray
    offsets: np.ndarray

    @classmethod
    def build(
        cls,
        *,
        file_names: list[str] | np.ndarray,
        image_ids: np.ndarray,
        sizes: np.ndarray,
        box_image_index: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        ignore: np.ndarray,
        issues: IssueCounter,
    ) -> AnnotationTable:
        """Validate boxes (see the module doc) and group them by image.

        Args:
            file_names, image_ids, sizes: one entry per image, as in the attributes.
            box_image_index: (B,) int64, the image (0..n-1) each box belongs to.
            boxes: (B, 4) XYXY absolute pixels, before validation.
            labels, ignore: (B,) per box.
            issues: where dropped and clipped boxes are counted.
        """
        sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        box_image_index = np.asarray(box_image_index, dtype=np.int64).reshape(-1)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        ignore = np.asarray(ignore, dtype=bool).reshape(-1)

        heights_widths = sizes[box_image_index].astype(np.float64)  # (B, 2)
        check = box_rule(boxes, heights_widths)
        not_positive = np.isin(check.problem, (NOT_FINITE, NEGATIVE_SIZE, ZERO_SIZE))
        issues.add("box of zero or negative size (dropped)", int(not_positive.sum()))
        issues.add("box outside its image (dropped)", int((check.problem == OUTSIDE).sum()))
        issues.add("box partly outside its image (clipped)", int(check.partly_outside.sum()))

        keep = check.problem == GOOD
        clipped = check.clipped
        # Stable sort keeps the file's order of boxes within an image.
        order = np.argsort(box_image_index[keep], kind="stable")
        kept_index = box_image_index[keep][order]
        counts = np.bincount(kept_index, minlength=len(sizes))
        return cls(
            file_names=np.asarray(file_names, dtype=str).reshape(-1),
            image_ids=np.asarray(image_ids, dtype=np.int64).reshape(-1),
            sizes=sizes,
            boxes=clipped[keep][order].astype(np.float32),
            labels=labels[keep][order],
            ignore=ignore[keep][order],
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        )

    def __len__(self) -> int:
        return len(self.image_ids)

    def boxes_of(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All boxes (M, 4), labels (M,) and ignore flags (M,) of image i, ignored ones included."""
        start, stop = self.offsets[i], self.offsets[i + 1]
        return self.boxes[start:stop], self.labels[start:stop], self.ignore[start:stop]

    def training_targets(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (M, 4) float32 and labels (M,) int64 of image i without crowd/difficult boxes."""
        boxes, labels, ignore = self.boxes_of(i)
        keep = ~ignore
        return boxes[keep].copy(), labels[keep].copy()

    def num_training_boxes(self) -> np.ndarray:
        """(n,) int64, how many non-ignored boxes each image has."""
        image_of_box = np.repeat(np.arange(len(self)), np.diff(self.offsets))  # (B,)
        return np.bincount(image_of_box[~self.ignore], minlength=len(self)).astype(np.int64)

    def select(self, indices: np.ndarray) -> AnnotationTable:
        """The table restricted to images `indices` (in that order), without a per-image loop."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        starts = self.offsets[indices]
        counts = self.offsets[indices + 1] - starts
        new_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        # Box b of the new table comes from starts[img] + (b - new_offsets[img]).
        box_rows = np.repeat(starts - new_offsets[:-1], counts) + np.arange(new_offsets[-1])
        return AnnotationTable(
            file_names=self.file_names[indices],
            image_ids=self.image_ids[indices],
            sizes=self.sizes[indices],
            boxes=self.boxes[box_rows],
            labels=self.labels[box_rows],
            ignore=self.ignore[box_rows],
            offsets=new_offsets,
        )

    def select_labels(self, keep_labels: np.ndarray, new_labels: np.ndarray) -> AnnotationTable:
        """Keep only boxes whose label is in `keep_labels`, relabelled through `new_labels`.

        Args:
            keep_labels: (K_old,) bool, which old labels stay.
            new_labels: (K_old,) int64, the new label of each kept old label.
        """
        keep = keep_labels[self.labels]  # (B,)
        image_of_box = np.repeat(np.arange(len(self)), np.diff(self.offsets))  # (B,)
        counts = np.bincount(image_of_box[keep], minlength=len(self))
        return AnnotationTable(
            file_names=self.file_names,
            image_ids=self.image_ids,
            sizes=self.sizes,
            boxes=self.boxes[keep],
            labels=new_labels[self.labels[keep]].astype(np.int64),
            ignore=self.ignore[keep],
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        )

    def to_coco_dict(self, class_names: list[str], label_to_category_id: list[int]) -> dict[str, Any]:
        """COCO instances JSON of this table: XYWH boxes, area = w * h, iscrowd = ignore.

        Category ids come from `label_to_category_id`; annotation ids are 1..B in table order;
        `file_name` is the table's file name (relative to the image root).
        """
        category_ids = np.asarray(label_to_category_id, dtype=np.int64)
        image_of_box = np.repeat(np.arange(len(self)), np.diff(self.offsets))  # (B,)
        xywh = self.boxes.astype(np.float64).copy()
        xywh[:, 2:] -= xywh[:, :2]
        images = [
            {"id": int(image_id), "file_name": str(name), "height": int(h), "width": int(w)}
            for image_id, name, (h, w) in zip(self.image_ids, self.file_names, self.sizes)
        ]
        annotations = [
            {
                "id": ann_id,
                "image_id": int(image_id),
                "category_id": int(category_id),
                "bbox": [round(float(v), 3) for v in box],
                "area": round(float(box[2] * box[3]), 3),
                "iscrowd": int(crowd),
            }
            for ann_id, (image_id, category_id, box, crowd) in enumerate(
                zip(self.image_ids[image_of_box], category_ids[self.labels], xywh, self.ignore), start=1
            )
        ]
        categories = [
            {"id": int(cid), "name": name, "supercategory": "none"}
            for cid, name in zip(label_to_category_id, class_names)
        ]
        return {"images": images, "annotations": annotations, "categories": categories}


def coco_from_dict(dataset: dict[str, Any]) -> COCO:
    """A pycocotools COCO object built in memory from an instances dict, without its prints."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
