"""The two COCO evaluation backends: pycocotools (the reference) and faster-coco-eval (the same
numbers to 1e-6, several times faster; the ``fast-eval`` extra). Both take validated results."""

from __future__ import annotations

import copy
from typing import Any

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .errors import EvaluationError, maybe_quiet
from .results import CheckedResults, gc_paused


def run_pycocotools(coco_gt: COCO, checked: CheckedResults, image_ids: list[int] | None,
                    quiet: bool, print_summary: bool) -> COCOeval:
    with maybe_quiet(quiet):
        coco_dt = _results_coco(coco_gt, checked, COCO)
        coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if image_ids is not None:
            coco_eval.params.imgIds = image_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
    with maybe_quiet(quiet and not print_summary):
        coco_eval.summarize()
    return coco_eval


def run_faster_coco_eval(coco_gt: Any, checked: CheckedResults, image_ids: list[int] | None,
                         quiet: bool, print_summary: bool) -> Any:
    try:
        import faster_coco_eval
        from faster_coco_eval import COCOeval_faster
    except ImportError:
        raise EvaluationError(
            "backend 'faster_coco_eval' needs the faster-coco-eval package: pip install -e '.[fast-eval]'"
        ) from None
    printer = (lambda *a, **k: None) if quiet else print
    if not isinstance(coco_gt, faster_coco_eval.COCO):
        # Shares the annotation dicts (no deep copy): like pycocotools, evaluation adds its
        # bookkeeping keys ("ignore", "_ignore") to them.
        coco_gt = faster_coco_eval.COCO(coco_gt.dataset, print_function=printer)
    with maybe_quiet(quiet):
        coco_dt = _results_coco(coco_gt, checked, faster_coco_eval.COCO)
        coco_eval = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=printer)
        if image_ids is not None:
            coco_eval.params.imgIds = image_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
    coco_eval.print_function = print if (print_summary or not quiet) else printer
    coco_eval.summarize()
    return coco_eval


def _results_coco(coco_gt: Any, checked: CheckedResults, coco_cls: type) -> Any:
    """The results COCO that ``coco_gt.loadRes(entries)`` builds for boxes: each entry with
    area = w * h, id = 1..n and iscrowd = 0, the ground truth's images and categories.

    Built here rather than through loadRes, which fails on an empty list, mutates the entries
    it is given and adds a polygon "segmentation" to each (read only by segm evaluation, and a
    large share of the faster backend's time: docs/benchmarks.md, coco_eval).
    """
    boxes = checked.boxes  # (n, 4) XYWH
    with gc_paused():
        annotations = [
            {"id": i, "image_id": im, "category_id": c, "bbox": b, "score": sc, "area": a, "iscrowd": 0}
            for i, im, c, b, sc, a in zip(
                range(1, len(boxes) + 1), checked.image_ids.tolist(), checked.category_ids.tolist(),
                boxes.tolist(), checked.scores.tolist(), (boxes[:, 2] * boxes[:, 3]).tolist(),
            )
        ]
    res = coco_cls()
    res.dataset = {
        "info": coco_gt.dataset.get("info", {}),  # shared: never read by scoring, and may nest past deepcopy's limit
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset["categories"]),
        "annotations": annotations,
    }
    res.createIndex()
    return res
