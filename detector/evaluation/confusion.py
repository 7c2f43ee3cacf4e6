"""The detection confusion matrix with a background row and column, mmdetection's definition.

Shape symbols: K classes, D detections and G ground-truth boxes of one image.

The rule of mmdetection's tools/analysis_tools/confusion_matrix.py (``analyze_per_img_dets``):
rows are the ground-truth class, columns the detected class, index K is background. Each
detection with score >= the threshold adds one to [gt class, detected class] for every
ground-truth box it overlaps with IoU >= the IoU threshold, and one to [background, detected
class] when it overlaps none; a ground-truth box that no detection of its own class overlaps so
adds one to [its class, background]. Unlike mmdetection, crowd boxes (iscrowd=1) are left out,
as the COCO evaluation ignores them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO


def confusion_matrix(coco_gt: COCO, results: Sequence[Mapping[str, Any]], image_ids: Iterable[int],
                     cat_ids: Sequence[int], *, score_threshold: float, iou_threshold: float = 0.5) -> np.ndarray:
    """(K+1, K+1) int64 counts: rows ground truth, columns detections, the last of each background.

    Args:
        coco_gt: the ground truth; results: validated COCO results entries (XYWH boxes);
        image_ids: the evaluated images (results on others are ignored);
        cat_ids: (K,) the category id of each row/column, in order.
    """
    k_of = {c: k for k, c in enumerate(cat_ids)}
    background = len(cat_ids)
    matrix = np.zeros((background + 1, background + 1), dtype=np.int64)
    by_image: dict[int, list[Mapping[str, Any]]] = {}
    for r in results:
        if r["score"] >= score_threshold and r["category_id"] in k_of:
            by_image.setdefault(int(r["image_id"]), []).append(r)
    for image_id in image_ids:
        gts = [a for a in coco_gt.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0) and a["category_id"] in k_of]
        dets = by_image.get(image_id, [])
        gt_labels = np.array([k_of[a["category_id"]] for a in gts], dtype=np.int64)  # (G,)
        det_labels = np.array([k_of[d["category_id"]] for d in dets], dtype=np.int64)  # (D,)
        if dets and gts:
            ious = np.asarray(mask_utils.iou([list(d["bbox"]) for d in dets], [list(a["bbox"]) for a in gts],
                                             [0] * len(gts))).reshape(len(dets), len(gts))  # (D, G)
            overlaps = ious >= iou_threshold
        else:
            overlaps = np.zeros((len(dets), len(gts)), dtype=bool)
        rows, cols = np.nonzero(overlaps)
        np.add.at(matrix, (gt_labels[cols], det_labels[rows]), 1)
        np.add.at(matrix, (background, det_labels[~overlaps.any(axis=1)]), 1)
        found = (overlaps & (det_labels[:, None] == gt_labels[None, :])).any(axis=0)  # (G,)
        np.add.at(matrix, (gt_labels[~found], background), 1)
    return matrix


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (NaN for an empty row), as mmdetection plots it (without x100)."""
    sums = matrix.sum(axis=1, keepdims=True).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums > 0, matrix / np.where(sums > 0, sums, 1), np.nan)
