"""COCO box evaluation: validated results -> pycocotools' 12 numbers and per-class AP.

Shape symbols: K classes.

The parts: ground_truth.py (load and check the ground truth, once), results.py (detections ->
results entries; the results validator), backends.py (pycocotools, faster-coco-eval), errors.py.

Conventions of the returned metrics (a plain, JSON-safe dict):
- the 12 numbers of ``COCOeval.summarize()`` under ``COCO_METRIC_NAMES``, on pycocotools' 0-1
  scale, as Python floats;
- ``NO_GT`` (-1.0, pycocotools' own marker) where no ground truth falls in that area range (or,
  for ``per_class``, where a class has no ground truth in the evaluated images). It is kept as -1
  rather than NaN so that the dict is valid strict JSON and equal to pycocotools' ``stats``;
  never average it with real values.
- ``"per_class"``: ``{class name: AP}``, the mean of ``COCOeval.eval["precision"]`` over IoU
  thresholds and recall points at area "all", maxDets 100, ignoring -1 entries (detectron2's
  ``COCOEvaluator._derive_coco_results``, without its x100).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from .backends import run_faster_coco_eval, run_pycocotools
from .errors import NO_GT, EvaluationError, is_no_gt
from .ground_truth import check_coco_gt, load_coco_gt
from .results import check_results, detections_to_coco_results, ids_array, load_results, validate_results

__all__ = [
    "BACKENDS", "COCO_METRIC_NAMES", "NO_GT", "EvaluationError", "class_names", "coco_metrics",
    "detections_to_coco_results", "evaluate_coco",
    "is_no_gt", "load_coco_gt", "load_results", "per_class_ap", "run_coco_eval", "validate_results",
]

COCO_METRIC_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)
"""The 12 numbers in the order of ``COCOeval.stats``."""

BACKENDS = ("pycocotools", "faster_coco_eval")


def evaluate_coco(
    coco_gt: COCO,
    results: list[dict] | str | os.PathLike,
    *,
    image_ids: Iterable[int] | None = None,
    per_class: bool = True,
    backend: str = "pycocotools",
    quiet: bool = True,
    print_summary: bool = False,
) -> dict[str, Any]:
    """pycocotools' box evaluation of COCO results against ``coco_gt``.

    Args:
        coco_gt: the ground truth, a pycocotools ``COCO`` (for the faster backend, a
            faster_coco_eval ``COCO`` is used as is, saving its index build).
        results: a list of results entries or the path of a results JSON file; validated
            (`validate_results`) before anything is computed; the caller's list is not modified.
        image_ids: evaluate over these images only (default: every image of ``coco_gt``).
            Results on other images are ignored, as pycocotools does.
        per_class: add ``"per_class"``: {class name: AP} (names made unique with the category
            id if two categories share one).
        backend: "pycocotools" (default) or "faster_coco_eval" (the ``fast-eval`` extra; the
            same numbers to 1e-6, several times faster).
        quiet: swallow the backend's progress printing.
        print_summary: print the backend's standard summary (pycocotools' 12 lines) even when quiet.

    Returns:
        ``{"AP": float, ..., "ARl": float}`` (keys `COCO_METRIC_NAMES`, 0-1 scale, ``NO_GT`` =
        -1.0 where that area range has no ground truth) plus ``"per_class"`` when asked.
        Empty results give 0.0 for every number that has ground truth (what pycocotools gives
        for images without detections) instead of pycocotools' crash on an empty list.

    Raises:
        EvaluationError: unreadable or invalid results, image ids outside ``coco_gt``, an
            unknown backend.
    """
    coco_eval = run_coco_eval(coco_gt, results, image_ids=image_ids, backend=backend, quiet=quiet,
                              print_summary=print_summary)
    return coco_metrics(coco_eval, coco_gt.cats, per_class=per_class)


def coco_metrics(coco_eval: Any, cats: Mapping[int, Mapping[str, Any]], *, per_class: bool = True) -> dict[str, Any]:
    """`evaluate_coco`'s dict from an evaluated ``COCOeval``: its 12 ``stats`` and, when asked,
    "per_class" (``cats``: ``COCO.cats``)."""
    metrics: dict[str, Any] = {name: float(v) for name, v in zip(COCO_METRIC_NAMES, coco_eval.stats)}
    if per_class:
        metrics["per_class"] = per_class_ap(coco_eval.eval["precision"], coco_eval.params.catIds, cats)
    return metrics


def run_coco_eval(
    coco_gt: COCO,
    results: list[dict] | str | os.PathLike,
    *,
    image_ids: Iterable[int] | None = None,
    backend: str = "pycocotools",
    quiet: bool = True,
    print_summary: bool = False,
) -> Any:
    """The evaluated, accumulated and summarised ``COCOeval`` behind `evaluate_coco` (same
    arguments and checks): for readers of its ``eval["precision"]``, ``eval["recall"]`` and
    ``evalImgs`` (the report's curves and tables)."""
    if backend not in BACKENDS:
        raise EvaluationError(f"unknown evaluation backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if isinstance(results, (str, os.PathLike)):
        results = load_results(results)
    check_coco_gt(coco_gt)
    checked = check_results(results, coco_gt)

    eval_image_ids = None
    if image_ids is not None:
        eval_image_ids = sorted(set(ids_array(image_ids).tolist()))
        unknown = [i for i in eval_image_ids if i not in coco_gt.imgs]
        if unknown:
            more = " ..." if len(unknown) > 10 else ""
            raise EvaluationError(f"image ids not in the ground truth: {unknown[:10]}{more}")

    if backend == "pycocotools":
        coco_eval = run_pycocotools(coco_gt, checked, eval_image_ids, quiet, print_summary)
    else:
        coco_eval = run_faster_coco_eval(coco_gt, checked, eval_image_ids, quiet, print_summary)
    return coco_eval


def per_class_ap(
    precision: np.ndarray, cat_ids: Sequence[int], cats: Mapping[int, Mapping[str, Any]]
) -> dict[str, float]:
    """{class name: AP} from ``COCOeval.eval["precision"]``, as detectron2 computes it.

    Args:
        precision: (T, R, K, A, M) IoU thresholds x recall points x classes x area ranges x
            maxDets, -1 where undefined.
        cat_ids: (K,) the category id of each class slice (``COCOeval.params.catIds``).
        cats: ``COCO.cats``: category id -> {"name", ...}.

    Returns:
        the mean over IoU thresholds and recall points at area "all" (index 0) and the largest
        maxDets (index -1, 100), ignoring -1 entries; ``NO_GT`` for a class without ground truth.
    """
    out = {}
    for k, name in enumerate(class_names(cat_ids, cats)):
        p = precision[:, :, k, 0, -1]  # (T, R)
        p = p[p > -1]
        out[name] = float(np.mean(p)) if p.size else NO_GT
    return out


def class_names(cat_ids: Sequence[int], cats: Mapping[int, Mapping[str, Any]]) -> list[str]:
    """The name of each category id, made unique with the id when two categories share one."""
    names = [str(cats[c]["name"]) for c in cat_ids]
    if len(set(names)) != len(names):
        names = [f"{n} (id {c})" for n, c in zip(names, cat_ids)]
    return names
