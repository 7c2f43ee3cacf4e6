"""A dataset whose ground truth is its own AnnotationTable (YOLO txt, keras-retinanet CSV).

Such formats carry no COCO file, so the evaluation ground truth is built from the table
(`AnnotationTable.to_coco_dict`: XYWH boxes, area = w * h, category ids 1..K in label order).
"""

from __future__ import annotations

from typing import Any

from pycocotools.coco import COCO

from detector.data.annotations import AnnotationTable, coco_from_dict
from detector.data.dataset import DetectionDataset, draw_subset, drop_empty_images


def select_images(table: AnnotationTable, drop_empty: bool, max_images: int | None, seed: int) -> AnnotationTable:
    """The table without images lacking a training box (drop_empty), then at most max_images drawn with seed."""
    if drop_empty:
        table = drop_empty_images(table)
    return table if max_images is None else table.select(draw_subset(len(table), max_images, seed))


class TableDataset(DetectionDataset):
    """`DetectionDataset` with `coco_dict()` and `coco_gt()` made from the table."""

    _coco_gt: COCO | None = None

    def coco_dict(self) -> dict[str, Any]:
        """The dataset as a COCO instances dict (what `detector convert --to coco` writes)."""
        return self.table.to_coco_dict(self.class_names, self.label_to_category_id)

    def coco_gt(self) -> COCO:
        if self._coco_gt is None:
            self._coco_gt = coco_from_dict(self.coco_dict())
        return self._coco_gt
