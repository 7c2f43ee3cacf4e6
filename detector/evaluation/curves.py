"""Curves and the per-class table, read from an evaluated ``COCOeval`` (pycocotools' own matching).

Shape symbols: T IoU thresholds, R recall points (101), K classes, A area ranges, M maxDets
settings, D detections of one class over all images, S score thresholds of the plotted grid.

Nothing is re-matched here: the precision-recall curves are slices of ``eval["precision"]`` and
the score-threshold curves count the true and false positives that ``evaluateImg`` marked in
``evalImgs`` (area "all", maxDets 100), so every number agrees with the 12 COCO numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

SCORE_GRID = np.linspace(0.0, 1.0, 101)
"""(S,) the score thresholds at which P, R and F1 are tabulated for the figures."""


def iou_index(coco_eval: Any, iou: float) -> int:
    """Index of ``iou`` in ``coco_eval.params.iouThrs``; ValueError when it is not one of them."""
    hits = np.flatnonzero(np.isclose(coco_eval.params.iouThrs, iou))
    if not len(hits):
        raise ValueError(f"IoU {iou} is not one of the evaluation's thresholds {coco_eval.params.iouThrs.tolist()}")
    return int(hits[0])


def _mean_defined(values: np.ndarray) -> float | None:
    """Mean of the entries > -1 (pycocotools' "undefined" marker), None when there are none."""
    values = values[values > -1]
    return float(values.mean()) if values.size else None


def pr_curves(coco_eval: Any) -> dict[str, Any]:
    """Precision at pycocotools' recall points, per class, area "all", maxDets 100.

    Returns:
        {"recall": (R,) list, "iou50": K lists of (R,) precision at IoU 0.5, "iou50_95": K lists
        of (R,) precision averaged over the T IoU thresholds}; a class without ground truth has
        None instead of a list. Values are ``eval["precision"][t, :, k, 0, -1]`` as they are
        (0 past the highest recall reached: pycocotools' own fill).
    """
    precision = coco_eval.eval["precision"]  # (T, R, K, A, M)
    t50 = iou_index(coco_eval, 0.5)
    iou50, iou50_95 = [], []
    for k in range(precision.shape[2]):
        p = precision[:, :, k, 0, -1]  # (T, R)
        defined = bool((p > -1).all())
        iou50.append(p[t50].tolist() if defined else None)
        iou50_95.append(p.mean(axis=0).tolist() if defined else None)
    return {"recall": coco_eval.params.recThrs.tolist(), "iou50": iou50, "iou50_95": iou50_95}


class ClassMatches(NamedTuple):
    """One class's detections over all evaluated images, as COCOeval matched them at one IoU."""

    scores: np.ndarray  # (D,) float64, descending
    true_positive: np.ndarray  # (D,) bool
    num_gt: int  # non-ignored (non-crowd) ground-truth boxes
    num_images: int  # evaluated images holding at least one of them


def class_matches(coco_eval: Any, iou: float = 0.5) -> list[ClassMatches]:
    """Per class, the detections COCOeval kept (maxDets 100, area "all", not ignored) with their
    true/false-positive flag at ``iou``, sorted by score as ``accumulate`` sorts them."""
    t = iou_index(coco_eval, iou)
    p = coco_eval.params
    num_areas, num_images = len(p.areaRng), len(p.imgIds)
    out = []
    for k in range(len(p.catIds)):
        entries = [e for e in coco_eval.evalImgs[k * num_areas * num_images:(k * num_areas + 1) * num_images]
                   if e is not None]  # area index 0 ("all") of class k
        if entries:
            scores = np.concatenate([np.asarray(e["dtScores"], dtype=np.float64) for e in entries])
            matched = np.concatenate([np.asarray(e["dtMatches"][t]) > 0 for e in entries])
            ignored = np.concatenate([np.asarray(e["dtIgnore"][t], dtype=bool) for e in entries])
            num_gt = int(sum(int((np.asarray(e["gtIgnore"]) == 0).sum()) for e in entries))
            num_img = sum(1 for e in entries if (np.asarray(e["gtIgnore"]) == 0).any())
        else:
            scores, matched, ignored, num_gt, num_img = np.zeros(0), np.zeros(0, bool), np.zeros(0, bool), 0, 0
        order = np.argsort(-scores[~ignored], kind="mergesort")  # pycocotools' sort
        out.append(ClassMatches(scores[~ignored][order], matched[~ignored][order], num_gt, num_img))
    return out


def counts_at(scores: np.ndarray, true_positive: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S,) true positives and (S,) detections among those with score >= each threshold."""
    order = np.argsort(-scores, kind="mergesort")
    s, tp = scores[order], true_positive[order].astype(np.float64)
    tp_cum = np.concatenate([[0.0], np.cumsum(tp)])  # (D+1,) true positives among the first n
    n = np.searchsorted(-s, -np.asarray(thresholds, dtype=np.float64), side="right")  # (S,)
    return tp_cum[n], n


def precision_recall_f1(scores: np.ndarray, true_positive: np.ndarray, num_gt: int,
                        thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P, R and F1 of the detections with score >= each threshold.

    Args:
        scores: (D,) detection scores, any order; true_positive: (D,) bool; num_gt: the
            ground-truth count; thresholds: (S,) score thresholds.

    Returns:
        three (S,) float arrays; precision is NaN where no detection passes and recall NaN
        without ground truth. F1 is 2 TP / (detections + ground truth), the same as 2PR / (P + R)
        where both are defined, 0 where no detection passes, NaN with neither.
    """
    tps, n = counts_at(scores, true_positive, thresholds)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n > 0, tps / np.maximum(n, 1), np.nan)
        recall = tps / num_gt if num_gt > 0 else np.full(len(n), np.nan)
        f1 = np.where(n + num_gt > 0, 2 * tps / np.maximum(n + num_gt, 1), np.nan)
    return precision, recall, f1


def best_f1(scores: np.ndarray, true_positive: np.ndarray, num_gt: int) -> dict[str, float] | None:
    """The score threshold of highest F1 among the detections' own scores (the threshold is a
    detection's score; the highest such threshold wins a tie), with its P, R and F1; None
    without ground truth or without detections."""
    if num_gt == 0 or len(scores) == 0:
        return None
    thresholds = np.unique(scores)[::-1]  # descending
    precision, recall, f1 = precision_recall_f1(scores, true_positive, num_gt, thresholds)
    i = int(np.argmax(f1))
    return {"threshold": float(thresholds[i]), "precision": float(precision[i]), "recall": float(recall[i]),
            "f1": float(f1[i])}


DEFAULT_SCORE_THRESHOLD = 0.5
"""The threshold `default_score_threshold` falls back to without a best-F1 one."""


def pooled(matches: Sequence[ClassMatches]) -> tuple[np.ndarray, np.ndarray, int]:
    """Every class's detections and ground truth together: (scores, true_positive, num_gt)."""
    if not matches:
        return np.zeros(0), np.zeros(0, dtype=bool), 0
    return (np.concatenate([m.scores for m in matches]), np.concatenate([m.true_positive for m in matches]),
            sum(m.num_gt for m in matches))


def default_score_threshold(matches: Sequence[ClassMatches]) -> float:
    """The pooled best-F1 threshold (the confusion matrix's default), else `DEFAULT_SCORE_THRESHOLD`
    (no detection or no ground truth)."""
    best = best_f1(*pooled(matches))
    return best["threshold"] if best is not None else DEFAULT_SCORE_THRESHOLD


def score_curves(matches: Sequence[ClassMatches], class_names: Sequence[str]) -> dict[str, Any]:
    """P, R, F1 against the score threshold per class and over all classes pooled, and the best-F1
    threshold of each (the pooled one counts every class's detections and ground truth together).

    Returns:
        {"thresholds": (S,) list, "per_class": {name: {"precision", "recall", "f1": (S,) lists,
        "best": best_f1(...)}}, "overall": the same for the pooled counts}; NaN becomes None.
    """
    def entry(scores, tp, num_gt):
        p, r, f = precision_recall_f1(scores, tp, num_gt, SCORE_GRID)
        return {"precision": _nan_to_none(p), "recall": _nan_to_none(r), "f1": _nan_to_none(f),
                "best": best_f1(scores, tp, num_gt)}

    per_class = {name: entry(m.scores, m.true_positive, m.num_gt) for name, m in zip(class_names, matches)}
    return {"thresholds": SCORE_GRID.tolist(), "per_class": per_class, "overall": entry(*pooled(matches))}


def class_table(coco_eval: Any, matches: Sequence[ClassMatches], class_names: Sequence[str]) -> list[dict[str, Any]]:
    """One row a class: AP, AP50, AP75 (``eval["precision"]``, area "all", maxDets 100, as
    `per_class_ap`), recall at 100 detections (``eval["recall"]`` averaged over IoU, the class's
    AR100), the number of non-crowd ground-truth boxes and of images holding one; None where
    the class has no ground truth."""
    precision = coco_eval.eval["precision"]  # (T, R, K, A, M)
    recall = coco_eval.eval["recall"]  # (T, K, A, M)
    t50, t75 = iou_index(coco_eval, 0.5), iou_index(coco_eval, 0.75)
    rows = []
    for k, (name, m) in enumerate(zip(class_names, matches)):
        p = precision[:, :, k, 0, -1]  # (T, R)
        rows.append({
            "class": name,
            "AP": _mean_defined(p),
            "AP50": _mean_defined(p[t50]),
            "AP75": _mean_defined(p[t75]),
            "recall100": _mean_defined(recall[:, k, 0, -1]),
            "instances": m.num_gt,
            "images": m.num_images,
        })
    return rows


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]
