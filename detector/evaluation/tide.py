"""The errors behind the AP, in TIDE's sense (Bolya et al., "TIDE: A General Toolbox for
Identifying Object Detection Errors", ECCV 2020), following its reference code (tidecv 1.0.1,
quantify.py, errors/main_errors.py, ap.py) for boxes.

Shape symbols: D detections and G non-crowd ground-truth boxes of one image.

The rules, per image, with a foreground IoU t_f = 0.5 and a background IoU t_b = 0.1:
- matching: the detections (the 100 best of the image, all classes) in descending score take the
  unmatched same-class ground truth of highest IoU if it is >= t_f; a detection left unmatched
  that overlaps a same-class crowd box by crowd IoU > t_f is ignored (no AP entry);
- each unmatched detection gets the first error that fits: localisation (same-class IoU in
  [t_b, t_f]), classification (IoU >= t_f with another class), duplicate (IoU >= t_f with an
  already matched box of its class), background (IoU <= t_b with everything), else "both"
  (wrong class and poorly localised);
- a ground-truth box left unmatched is missed unless a classification or localisation error
  points at it while it is unmatched.
Fixing a type and recomputing AP (TIDE's 101-point AP at t_f, the mean over classes) gives the
AP gained: a classification or localisation error becomes a true positive (the best-scoring one
of each ground-truth box; the others are suppressed), a duplicate, background or "both" error is
suppressed, a missed box is removed from the ground truth. Gains below 0 (binning) count as 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

ERROR_TYPES: tuple[str, ...] = ("cls", "loc", "both", "dupe", "bkg", "miss")
"""TIDE's six main error types, in its order (Cls, Loc, Both, Dupe, Bkg, Miss)."""

ERROR_NAMES: dict[str, str] = {
    "cls": "classification", "loc": "localisation", "both": "both (cls + loc)",
    "dupe": "duplicate", "bkg": "background", "miss": "missed",
}


@dataclass
class TideError:
    """One error: its type, image, and the detection (index into the results) or ground-truth
    annotation id it concerns; ``gt_id`` of cls/loc errors is the box it would fix."""

    type: str
    image_id: int
    det: int | None = None
    gt_id: int | None = None


@dataclass
class TideResult:
    """Counts, AP gained per type and the errors themselves, on the 0-1 AP scale."""

    ap: float
    counts: dict[str, int]
    delta_ap: dict[str, float]
    errors: list[TideError]
    true_positives: dict[int, list[int]] = field(default_factory=dict)  # image id -> result indices


@dataclass
class _ClassAP:
    points: dict[Any, tuple[float, bool]] = field(default_factory=dict)  # key -> (score, is true)
    num_gt: int = 0

    def empty(self) -> bool:
        return not self.points and self.num_gt == 0


def tide_ap(points: Iterable[tuple[float, bool]], num_gt: int) -> float:
    """TIDE's AP of one class (ap.py): precision made monotone, read at 101 recall points by
    ``searchsorted(recalls, x, "left")``, averaged; 0 without ground truth."""
    data = sorted(points, key=lambda p: -p[0])  # stable, as TIDE's list.sort
    if num_gt == 0 or not data:
        return 0.0
    tp = np.cumsum([1.0 if t else 0.0 for _, t in data])  # (n,)
    precision = np.maximum.accumulate((tp / np.arange(1, len(data) + 1))[::-1])[::-1]  # monotone
    idx = np.searchsorted(tp / num_gt, np.arange(101) / 100, side="left")  # (101,) TIDE's x / 100, not linspace
    reached = idx < len(precision)
    return float(np.where(reached, precision[np.minimum(idx, len(precision) - 1)], 0.0).mean())


def _mean_ap(classes: Mapping[Any, _ClassAP]) -> float:
    aps = [tide_ap(c.points.values(), c.num_gt) for c in classes.values() if not c.empty()]
    return float(np.mean(aps)) if aps else 0.0


class _GtState:
    """Per ground-truth box: matched, pointed at by a cls/loc error, and the best such error."""

    def __init__(self) -> None:
        self.used = False
        self.usable = False
        self.best: tuple[float, int] | None = None  # (score, result index)


def tide_errors(coco_gt: COCO, results: Sequence[Mapping[str, Any]], image_ids: Iterable[int],
                cat_ids: Sequence[int], *, pos_threshold: float = 0.5, bg_threshold: float = 0.1,
                max_dets: int = 100) -> TideResult:
    """TIDE's error counts and AP gained by fixing each type (see the module docstring).

    Args:
        coco_gt: the ground truth; results: validated COCO results entries (XYWH);
        image_ids: the evaluated images; cat_ids: the categories evaluated (others are left out).
    """
    wanted = set(cat_ids)
    by_image: dict[int, list[int]] = {}
    for i, r in enumerate(results):
        if r["category_id"] in wanted:
            by_image.setdefault(int(r["image_id"]), []).append(i)
    classes: dict[int, _ClassAP] = {}
    errors: list[TideError] = []
    gt_state: dict[int, _GtState] = {}
    true_positives: dict[int, list[int]] = {}

    for image_id in image_ids:
        anns = [a for a in coco_gt.imgToAnns.get(image_id, []) if a["category_id"] in wanted]
        gts = [a for a in anns if not a.get("iscrowd", 0)]
        crowds = [a for a in anns if a.get("iscrowd", 0)]
        for a in gts:
            classes.setdefault(a["category_id"], _ClassAP()).num_gt += 1
            gt_state[a["id"]] = _GtState()
        dets = sorted(by_image.get(image_id, []), key=lambda i: -results[i]["score"])[:max_dets]
        if not dets:
            errors += [TideError("miss", image_id, gt_id=a["id"]) for a in gts]
            continue
        boxes = [list(results[i]["bbox"]) for i in dets]
        det_cls = np.array([int(results[i]["category_id"]) for i in dets])  # (D,)
        gt_cls = np.array([a["category_id"] for a in gts])  # (G,)
        iou = (np.asarray(mask_utils.iou(boxes, [list(a["bbox"]) for a in gts], [0] * len(gts))).reshape(len(dets), len(gts))
               if gts else np.zeros((len(dets), 0)))  # (D, G)
        same = det_cls[:, None] == gt_cls[None, :]  # (D, G)
        cls_iou = iou * same
        used = np.zeros(len(dets), dtype=object)  # True matched, False not, None ignored (crowd)
        used[:] = False
        buffer = cls_iou.copy()
        for d in range(len(dets)):
            if gts:
                g = int(np.argmax(buffer[d]))
                if buffer[d, g] >= pos_threshold:
                    used[d] = True
                    gt_state[gts[g]["id"]].used = True
                    buffer[:, g] = 0
        for crowd in crowds:
            crowd_iou = np.asarray(mask_utils.iou(boxes, [list(crowd["bbox"])], [1])).reshape(-1)  # (D,)
            for d in range(len(dets)):
                if used[d] is False and crowd_iou[d] > pos_threshold and det_cls[d] == crowd["category_id"]:
                    used[d] = None
        for d, i in enumerate(dets):
            if used[d] is not None:
                classes.setdefault(int(det_cls[d]), _ClassAP()).points[("det", i)] = (results[i]["score"], bool(used[d]))
            if used[d] is True:
                true_positives.setdefault(image_id, []).append(i)
        gt_used = np.array([gt_state[a["id"]].used for a in gts], dtype=bool)  # (G,)
        for d, i in enumerate(dets):
            if used[d] is True:
                continue
            errors.append(_classify(d, i, image_id, gts, iou, cls_iou, same, gt_used, gt_state,
                                    results[i]["score"], pos_threshold, bg_threshold))
        for a in gts:
            st = gt_state[a["id"]]
            if not st.used and not st.usable:
                errors.append(TideError("miss", image_id, gt_id=a["id"]))

    base = _mean_ap(classes)
    counts = {t: sum(e.type == t for e in errors) for t in ERROR_TYPES}
    delta = {t: max(_mean_ap(_fixed(classes, errors, t, results, coco_gt, gt_state)) - base, 0.0)
             for t in ERROR_TYPES}
    return TideResult(ap=base, counts=counts, delta_ap=delta, errors=errors, true_positives=true_positives)


def _classify(d: int, i: int, image_id: int, gts: list, iou: np.ndarray, cls_iou: np.ndarray, same: np.ndarray,
              gt_used: np.ndarray, gt_state: dict, score: float, pos: float, bg: float) -> TideError:
    """The error type of unmatched detection ``d`` (TIDE's order of tests), noting which
    ground-truth box a cls/loc error would fix."""
    if not gts:
        return TideError("bkg", image_id, det=i)
    g = int(np.argmax(cls_iou[d]))
    if bg <= cls_iou[d, g] <= pos:
        return _pointing("loc", image_id, i, gts[g]["id"], gt_state, score)
    noncls = iou[d] * ~same[d]
    g = int(np.argmax(noncls))
    if noncls[g] >= pos:
        return _pointing("cls", image_id, i, gts[g]["id"], gt_state, score)
    used_cls = iou[d] * same[d] * gt_used
    if used_cls[int(np.argmax(used_cls))] >= pos:
        return TideError("dupe", image_id, det=i)
    if iou[d].max() <= bg:
        return TideError("bkg", image_id, det=i)
    return TideError("both", image_id, det=i)


def _pointing(kind: str, image_id: int, i: int, gt_id: int, gt_state: dict, score: float) -> TideError:
    """A cls/loc error: an unmatched box it points at becomes "usable" (not missed) and remembers
    its best-scoring error (TIDE's BestGTMatch: the first of equal scores wins)."""
    st = gt_state[gt_id]
    if not st.used:
        st.usable = True
        if st.best is None or st.best[0] < score:
            st.best = (score, i)
    return TideError(kind, image_id, det=i, gt_id=gt_id)


def _fixed(classes: Mapping[Any, _ClassAP], errors: Sequence[TideError], kind: str,
           results: Sequence[Mapping[str, Any]], coco_gt: COCO, gt_state: Mapping[int, _GtState]) -> dict:
    """The AP data with every error of type ``kind`` fixed (TIDE's fix_errors: the errors' points
    first, then the true positives, an order that decides between tied scores)."""
    fixed = {c: _ClassAP(num_gt=obj.num_gt) for c, obj in classes.items()}
    for e in errors:
        if e.type == "miss":
            if kind == "miss":
                fixed[coco_gt.anns[e.gt_id]["category_id"]].num_gt -= 1
            continue
        key, r = ("det", e.det), results[e.det]
        original = classes.get(r["category_id"], _ClassAP()).points.get(key)  # None: an ignored detection
        if e.type != kind:
            if original is not None:
                fixed[r["category_id"]].points[key] = original
            continue
        if kind in ("cls", "loc"):
            st = gt_state[e.gt_id]
            if not st.used and st.best is not None and st.best[1] == e.det:
                target = coco_gt.anns[e.gt_id]["category_id"] if kind == "cls" else r["category_id"]
                fixed.setdefault(target, _ClassAP()).points[key] = (r["score"], True)
    for c, obj in classes.items():
        fixed[c].points.update((k, p) for k, p in obj.points.items() if p[1])
    return fixed
