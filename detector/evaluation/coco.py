"""COCO box evaluation: detections -> COCO results -> pycocotools' 12 numbers and per-class AP.

Shape symbols: D detections in one image, K classes.

The edge of the project's box contract: inside, boxes are XYXY in absolute pixels and labels are
contiguous 0..K-1; a COCO results entry is ``{"image_id", "category_id", "bbox": [x, y, w, h],
"score"}`` with the dataset's own (possibly non-contiguous) category ids.

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

import contextlib
import copy
import gc
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from numbers import Integral, Real
from typing import Any, NamedTuple

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

logger = logging.getLogger(__name__)

COCO_METRIC_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)
"""The 12 numbers in the order of ``COCOeval.stats``."""

NO_GT = -1.0
"""pycocotools' marker for "no ground truth in this area range / class": not a score."""

BACKENDS = ("pycocotools", "faster_coco_eval")


class EvaluationError(ValueError):
    """Bad evaluation input (results, ground truth, ids); the message is one line."""


# --------------------------------------------------------------------------------------------
# Loading


def load_coco_gt(source: str | os.PathLike | Mapping[str, Any], *, quiet: bool = True) -> COCO:
    """A pycocotools ``COCO`` from a COCO JSON path or an already-loaded dict.

    The structure pycocotools needs for box evaluation is checked first ("images",
    "annotations", "categories" lists; integer ids; "id", "area" and "iscrowd" on every
    annotation, ids unique and not 0), so a bad file fails here with one clear line instead of a
    KeyError deep inside COCOeval or a silently wrong number. A dict is used
    as is (not copied): pycocotools adds an "ignore" key to its annotations during evaluation.
    """
    if isinstance(source, Mapping):
        dataset, where = source, "ground truth"
    else:
        dataset, where = _read_json(source, "ground-truth"), f"ground-truth file {os.fspath(source)}"
    _check_gt_dataset(dataset, where)
    with _maybe_quiet(quiet):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    return coco


def load_results(path: str | os.PathLike) -> list[dict]:
    """The parsed list of a COCO results JSON file (not yet validated: see `validate_results`)."""
    data = _read_json(path, "results")
    if not isinstance(data, list):
        raise EvaluationError(
            f"results file {os.fspath(path)}: expected a JSON list of detections, got {_json_type(data)}"
        )
    return data


def _read_json(path: str | os.PathLike, what: str) -> Any:
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise EvaluationError(f"{what} file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise EvaluationError(
            f"{what} file {path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise EvaluationError(f"cannot read {what} file {path}: {_one_line(e)}") from None
    except ValueError as e:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise EvaluationError(f"{what} file {path} is not valid JSON: {_one_line(e).split(';')[0]}") from None
    except RecursionError:  # e.g. [[[[...]]]] nested deeper than the parser's recursion limit
        raise EvaluationError(f"{what} file {path} is not valid JSON: nested too deeply") from None


def _check_gt_dataset(dataset: Any, where: str) -> None:
    if not isinstance(dataset, Mapping):
        raise EvaluationError(
            f"{where}: expected a JSON object with images/annotations/categories, got {_json_type(dataset)}"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise EvaluationError(f"{where}: missing or non-list {key!r}")
    for key, required in (("images", ("id",)), ("categories", ("id", "name")),
                          ("annotations", ("id", "image_id", "category_id", "bbox", "area", "iscrowd"))):
        for i, entry in enumerate(dataset[key]):
            if not isinstance(entry, Mapping):
                raise EvaluationError(f"{where}: {key}[{i}] is {_json_type(entry)}, expected an object")
            missing = [k for k in required if k not in entry]
            if missing:
                raise EvaluationError(f"{where}: {key}[{i}] lacks {', '.join(repr(k) for k in missing)}")
    for key, field in (("images", "id"), ("categories", "id"), ("annotations", "image_id"),
                       ("annotations", "category_id")):
        values = [entry[field] for entry in dataset[key]]
        if not set(map(type, values)) <= _INT:
            i = next(i for i, v in enumerate(values) if not _is_int(v))
            raise EvaluationError(f"{where}: {key}[{i}] {field} must be an integer, got {values[i]!r}")
    # pycocotools records a match as the matched annotation's id, 0 meaning "unmatched", and
    # indexes annotations by id: an id 0 or a repeated id silently changes the numbers.
    ann_ids = [a["id"] for a in dataset["annotations"]]
    if len(set(ann_ids)) != len(ann_ids) or 0 in ann_ids:
        seen: set = set()
        for i, ann_id in enumerate(ann_ids):
            if ann_id == 0:
                raise EvaluationError(f"{where}: annotations[{i}] has id 0, which pycocotools reads as 'unmatched'; "
                                      "number annotations from 1")
            if ann_id in seen:
                raise EvaluationError(f"{where}: annotations[{i}] repeats annotation id {ann_id!r}")
            seen.add(ann_id)
    # A ground-truth box that is not 4 finite numbers, or has a negative size, can never be matched:
    # pycocotools would count it as a missed object and lower recall and AP without a word.
    for i, a in enumerate(dataset["annotations"]):
        box = a["bbox"]
        if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(_is_real(v) for v in box)):
            raise EvaluationError(f"{where}: annotations[{i}] bbox must be 4 numbers [x, y, w, h], got {box!r}")
        if not all(math.isfinite(v) for v in box):
            raise EvaluationError(f"{where}: annotations[{i}] has a non-finite bbox {box!r}")
        if box[2] < 0 or box[3] < 0:
            raise EvaluationError(f"{where}: annotations[{i}] has a negative bbox width or height {box!r}")


# --------------------------------------------------------------------------------------------
# Detections -> results


def detections_to_coco_results(
    detections: Sequence[Mapping[str, Any]],
    image_ids: Iterable[int] | Any,
    label_to_category_id: Mapping[int, int] | Sequence[int],
    *,
    drop_degenerate: bool = True,
) -> list[dict]:
    """COCO results entries from per-image detections.

    Args:
        detections: one dict per image with "boxes" (D, 4) XYXY float in the ORIGINAL image's
            pixels, "scores" (D,), "labels" (D,) int in 0..K-1; torch tensors (any device, any
            float dtype) or numpy arrays.
        image_ids: (N,) the COCO image id of each entry of ``detections`` (ints, a tensor or
            an array).
        label_to_category_id: contiguous label -> COCO category id, a mapping or a sequence
            indexed by label (e.g. ``dataset.category_ids``).
        drop_degenerate: boxes with zero (or negative) width or height (a box clipped to the
            image edge can collapse) cannot overlap anything and a COCO results file may not
            hold them (see `validate_results`): they are dropped, with a logged warning giving
            their count. With False they raise instead.

    Returns:
        ``[{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}, ...]``
        in image order, then detection order; plain Python numbers, JSON-ready.

    Raises:
        EvaluationError: lengths that disagree, a label outside the map, a non-finite box or
            score (a model bug that would silently change AP).
    """
    image_ids = _ids_array(image_ids)
    if len(image_ids) != len(detections):
        raise EvaluationError(f"{len(detections)} detection dicts but {len(image_ids)} image ids")
    lut = _label_lookup(label_to_category_id)

    results: list[dict] = []
    dropped = 0
    with _gc_paused():
        for image_id, det in zip(image_ids.tolist(), detections):
            dropped += _append_image_results(results, image_id, det, lut, drop_degenerate)
    if dropped:
        logger.warning("dropped %d detection(s) with zero width or height before COCO evaluation", dropped)
    return results


def _append_image_results(results: list[dict], image_id: int, det: Mapping[str, Any], lut: np.ndarray,
                          drop_degenerate: bool) -> int:
    """Append one image's results entries; returns the number of degenerate boxes dropped."""
    boxes = _to_numpy(det["boxes"]).astype(np.float64, copy=False).reshape(-1, 4)  # (D, 4)
    scores = _to_numpy(det["scores"]).astype(np.float64, copy=False).reshape(-1)  # (D,)
    labels = _to_numpy(det["labels"]).reshape(-1)  # (D,)
    if not (len(boxes) == len(scores) == len(labels)):
        raise EvaluationError(
            f"image {image_id}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels"
        )
    if len(boxes) == 0:
        return 0
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise EvaluationError(f"image {image_id}: non-finite box or score in the detections")
    if labels.dtype.kind not in "iu":
        raise EvaluationError(f"image {image_id}: labels must be integers, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= len(lut) or (lut[labels] < 0).any():
        raise EvaluationError(
            f"image {image_id}: labels {sorted(set(labels.tolist()))} outside the label map "
            f"(labels with a category: {np.flatnonzero(lut >= 0).tolist()})"
        )
    xywh = boxes.copy()  # (D, 4)
    xywh[:, 2:] -= boxes[:, :2]
    keep = (xywh[:, 2] > 0) & (xywh[:, 3] > 0)  # (D,)
    dropped = int(len(keep) - keep.sum())
    if dropped:
        if not drop_degenerate:
            i = int(np.flatnonzero(~keep)[0])
            raise EvaluationError(f"image {image_id}: detection {i} has zero or negative width/height")
        xywh, scores, labels = xywh[keep], scores[keep], labels[keep]
    categories = lut[labels].tolist()
    results.extend(
        {"image_id": image_id, "category_id": c, "bbox": b, "score": s}
        for c, b, s in zip(categories, xywh.tolist(), scores.tolist())
    )
    return dropped


def _label_lookup(label_to_category_id: Mapping[int, int] | Sequence[int]) -> np.ndarray:
    """(K,) int64 array: label -> category id, -1 for a label without one."""
    if isinstance(label_to_category_id, Mapping):
        pairs = {int(k): int(v) for k, v in label_to_category_id.items()}
    else:
        pairs = {i: int(v) for i, v in enumerate(_to_numpy(label_to_category_id).reshape(-1).tolist())}
    if not pairs:
        raise EvaluationError("label_to_category_id is empty")
    if min(pairs) < 0:
        raise EvaluationError(f"label_to_category_id has a negative label {min(pairs)}")
    lut = np.full(max(pairs) + 1, -1, dtype=np.int64)
    for label, cat in pairs.items():
        lut[label] = cat
    return lut


def _ids_array(ids: Any) -> np.ndarray:
    """(N,) int64 image ids from a tensor, an array or any iterable of ints."""
    arr = _to_numpy(ids) if hasattr(ids, "detach") or isinstance(ids, np.ndarray) else np.asarray(list(ids))
    arr = arr.reshape(-1)
    if arr.size and arr.dtype.kind not in "iu":
        raise EvaluationError(f"image ids must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _to_numpy(x: Any) -> np.ndarray:
    """A numpy view of a torch tensor (any device; low-precision floats widened) or array-like."""
    if hasattr(x, "detach"):  # a torch tensor; torch itself is not imported here
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < 4:  # bfloat16 / float16
            x = x.float()
        return x.numpy()
    return np.asarray(x)


# --------------------------------------------------------------------------------------------
# Validation


def validate_results(results: Any, coco_gt: COCO) -> list[dict]:
    """Checked, normalised copies of COCO results entries (the input is left untouched).

    Each entry must be an object with an integer "image_id" of an image in ``coco_gt``, an
    integer "category_id" of one of its categories, a finite "score" and a "bbox" of 4 finite
    numbers with width and height > 0. Extra keys are dropped.

    Returns:
        ``[{"image_id": int, "category_id": int, "bbox": [4 floats], "score": float}, ...]``.

    Raises:
        EvaluationError: the first offending entry, by index, and why.
    """
    checked = _check_results(results, coco_gt)
    with _gc_paused():
        return [
            {"image_id": im, "category_id": c, "bbox": b, "score": sc}
            for im, c, b, sc in zip(checked.image_ids.tolist(), checked.category_ids.tolist(),
                                    checked.boxes.tolist(), checked.scores.tolist())
        ]


class _CheckedResults(NamedTuple):
    """Validated results as arrays: n entries."""

    image_ids: np.ndarray  # (n,) int64
    category_ids: np.ndarray  # (n,) int64
    boxes: np.ndarray  # (n, 4) float64 XYWH
    scores: np.ndarray  # (n,) float64


def _check_results(results: Any, coco_gt: COCO) -> _CheckedResults:
    """`validate_results` without building the output dicts."""
    if not isinstance(results, list):
        raise EvaluationError(f"results: expected a list of detections, got {_json_type(results)}")
    n = len(results)
    if n == 0:
        return _CheckedResults(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0))
    with _gc_paused():
        # Well-formed input takes a bulk path (C-level type sets, ~0.1 us an entry); anything
        # else, or numpy scalars, goes entry by entry, which names the first bad entry.
        fields = _entry_fields_bulk(results) or _entry_fields_one_by_one(results)
        image_ids, category_ids, scores, bboxes = fields
        try:
            boxes = np.fromiter(chain.from_iterable(bboxes), dtype=np.float64, count=4 * n).reshape(n, 4)  # XYWH
            score_arr = np.asarray(scores, dtype=np.float64)  # (n,)
            img_arr = np.asarray(image_ids, dtype=np.int64)  # (n,)
            cat_arr = np.asarray(category_ids, dtype=np.int64)  # (n,)
        except OverflowError:  # an integer beyond 64 bits, or beyond float range
            i = _first_out_of_range(fields)
            raise EvaluationError(f"results entry {i}: a number out of range in {results[i]!r}") from None

        def first(bad: np.ndarray) -> int | None:
            idx = np.flatnonzero(bad)
            return int(idx[0]) if len(idx) else None

        if (i := first(~np.isfinite(boxes).all(axis=1))) is not None:
            raise EvaluationError(f"results entry {i}: non-finite bbox {results[i]['bbox']!r}")
        if (i := first(~np.isfinite(score_arr))) is not None:
            raise EvaluationError(f"results entry {i}: non-finite score {results[i]['score']!r}")
        if (i := first((boxes[:, 2] <= 0) | (boxes[:, 3] <= 0))) is not None:
            raise EvaluationError(
                f"results entry {i}: bbox width and height must be > 0, got {results[i]['bbox']!r}"
            )
        known_images = np.fromiter(coco_gt.imgs.keys(), dtype=np.int64, count=len(coco_gt.imgs))
        if (i := first(~np.isin(img_arr, known_images))) is not None:
            raise EvaluationError(f"results entry {i}: unknown image_id {image_ids[i]} (not in the ground truth)")
        known_cats = np.fromiter(coco_gt.cats.keys(), dtype=np.int64, count=len(coco_gt.cats))
        if (i := first(~np.isin(cat_arr, known_cats))) is not None:
            raise EvaluationError(
                f"results entry {i}: unknown category_id {category_ids[i]} (ground-truth ids: {sorted(coco_gt.cats)})"
            )
    return _CheckedResults(img_arr, cat_arr, boxes, score_arr)


_INT = {int}
_REAL = {int, float}


def _entry_fields_bulk(results: list) -> tuple[list, list, list, list] | None:
    """The four fields of well-formed entries of plain Python types, else None."""
    if set(map(type, results)) != {dict}:
        return None
    try:
        image_ids = [r["image_id"] for r in results]
        category_ids = [r["category_id"] for r in results]
        scores = [r["score"] for r in results]
        bboxes = [r["bbox"] for r in results]
    except KeyError:
        return None
    ok = (
        set(map(type, image_ids)) <= _INT
        and set(map(type, category_ids)) <= _INT
        and set(map(type, scores)) <= _REAL
        and set(map(type, bboxes)) <= {list, tuple}
        and set(map(len, bboxes)) == {4}
        and set(map(type, chain.from_iterable(bboxes))) <= _REAL
    )
    return (image_ids, category_ids, scores, bboxes) if ok else None


def _entry_fields_one_by_one(results: list) -> tuple[list, list, list, list]:
    """The four fields, checking each entry's structure and types; raises on the first bad one."""
    n = len(results)
    image_ids, category_ids, scores = [0] * n, [0] * n, [0.0] * n
    bboxes: list[Any] = [None] * n
    for i, r in enumerate(results):
        if type(r) is not dict:
            raise EvaluationError(f"results entry {i}: expected an object, got {_json_type(r)}")
        try:
            image_id, category_id, bbox, score = r["image_id"], r["category_id"], r["bbox"], r["score"]
        except KeyError as e:
            raise EvaluationError(f"results entry {i}: missing key {e.args[0]!r}") from None
        if not _is_int(image_id):
            raise EvaluationError(f"results entry {i}: image_id must be an integer, got {image_id!r}")
        if not _is_int(category_id):
            raise EvaluationError(f"results entry {i}: category_id must be an integer, got {category_id!r}")
        if not _is_real(score):
            raise EvaluationError(f"results entry {i}: score must be a number, got {score!r}")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_real(v) for v in bbox):
            raise EvaluationError(
                f"results entry {i}: bbox must be a list of 4 numbers [x, y, w, h], got {bbox!r}"
            )
        try:
            image_ids[i], category_ids[i], scores[i], bboxes[i] = int(image_id), int(category_id), float(score), bbox
        except OverflowError:  # a score beyond float range
            raise EvaluationError(f"results entry {i}: a number out of range in {r!r}") from None
    return image_ids, category_ids, scores, bboxes


def _first_out_of_range(fields: tuple[list, list, list, list]) -> int:
    """Index of the first entry whose ids do not fit int64 or whose numbers do not fit float64."""
    for i, (image_id, category_id, score, bbox) in enumerate(zip(*fields)):
        try:
            np.asarray([image_id, category_id], dtype=np.int64)
            np.asarray([score, *bbox], dtype=np.float64)
        except OverflowError:
            return i
    return 0


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector while building many small dicts (which creates no
    cycles): with a large heap its repeated passes otherwise triple the time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _is_int(v: Any) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


# --------------------------------------------------------------------------------------------
# Evaluation


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
    if backend not in BACKENDS:
        raise EvaluationError(f"unknown evaluation backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if isinstance(results, (str, os.PathLike)):
        results = load_results(results)
    _check_gt_dataset(coco_gt.dataset, "ground truth")
    checked = _check_results(results, coco_gt)

    eval_image_ids = None
    if image_ids is not None:
        eval_image_ids = sorted(set(_ids_array(image_ids).tolist()))
        unknown = [i for i in eval_image_ids if i not in coco_gt.imgs]
        if unknown:
            more = " ..." if len(unknown) > 10 else ""
            raise EvaluationError(f"image ids not in the ground truth: {unknown[:10]}{more}")

    if backend == "pycocotools":
        coco_eval = _run_pycocotools(coco_gt, checked, eval_image_ids, quiet, print_summary)
    else:
        coco_eval = _run_faster_coco_eval(coco_gt, checked, eval_image_ids, quiet, print_summary)

    metrics: dict[str, Any] = {name: float(v) for name, v in zip(COCO_METRIC_NAMES, coco_eval.stats)}
    if per_class:
        metrics["per_class"] = per_class_ap(coco_eval.eval["precision"], coco_eval.params.catIds, coco_gt.cats)
    return metrics


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
    names = [str(cats[c]["name"]) for c in cat_ids]
    if len(set(names)) != len(names):
        names = [f"{n} (id {c})" for n, c in zip(names, cat_ids)]
    out = {}
    for k, name in enumerate(names):
        p = precision[:, :, k, 0, -1]  # (T, R)
        p = p[p > -1]
        out[name] = float(np.mean(p)) if p.size else NO_GT
    return out


def _run_pycocotools(coco_gt: COCO, checked: _CheckedResults, image_ids: list[int] | None,
                     quiet: bool, print_summary: bool) -> COCOeval:
    with _maybe_quiet(quiet):
        coco_dt = _results_coco(coco_gt, checked, COCO)
        coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if image_ids is not None:
            coco_eval.params.imgIds = image_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
    with _maybe_quiet(quiet and not print_summary):
        coco_eval.summarize()
    return coco_eval


def _run_faster_coco_eval(coco_gt: Any, checked: _CheckedResults, image_ids: list[int] | None,
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
    with _maybe_quiet(quiet):
        coco_dt = _results_coco(coco_gt, checked, faster_coco_eval.COCO)
        coco_eval = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=printer)
        if image_ids is not None:
            coco_eval.params.imgIds = image_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
    coco_eval.print_function = print if (print_summary or not quiet) else printer
    coco_eval.summarize()
    return coco_eval


def _results_coco(coco_gt: Any, checked: _CheckedResults, coco_cls: type) -> Any:
    """The results COCO that ``coco_gt.loadRes(entries)`` builds for boxes: each entry with
    area = w * h, id = 1..n and iscrowd = 0, the ground truth's images and categories.

    Built here rather than through loadRes, which fails on an empty list, mutates the entries
    it is given and adds a polygon "segmentation" to each (read only by segm evaluation; 40% of
    the faster backend's time on 100k detections).
    """
    boxes = checked.boxes  # (n, 4) XYWH
    with _gc_paused():
        annotations = [
            {"id": i, "image_id": im, "category_id": c, "bbox": b, "score": sc, "area": a, "iscrowd": 0}
            for i, im, c, b, sc, a in zip(
                range(1, len(boxes) + 1), checked.image_ids.tolist(), checked.category_ids.tolist(),
                boxes.tolist(), checked.scores.tolist(), (boxes[:, 2] * boxes[:, 3]).tolist(),
            )
        ]
    res = coco_cls()
    res.dataset = {
        "info": copy.deepcopy(coco_gt.dataset.get("info", {})),
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset["categories"]),
        "annotations": annotations,
    }
    res.createIndex()
    return res


@contextlib.contextmanager
def _maybe_quiet(quiet: bool):
    if quiet:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    else:
        yield


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, Mapping):
        return "an object"
    if isinstance(v, (list, tuple)):
        return "a list"
    if isinstance(v, str):
        return "a string"
    if v is None:
        return "null"
    if isinstance(v, Real):
        return "a number"
    return type(v).__name__


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def is_no_gt(value: float | None) -> bool:
    """Whether a metric value is the "no ground truth" marker (-1, or NaN/None from elsewhere)."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == NO_GT
