"""COCO results: detections -> results entries, and the one validator of results entries.

Shape symbols: D detections in one image, K classes.

The edge of the project's box contract: inside, boxes are XYXY in absolute pixels and labels are
contiguous 0..K-1; a COCO results entry is ``{"image_id", "category_id", "bbox": [x, y, w, h],
"score"}`` with the dataset's own (possibly non-contiguous) category ids.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from typing import Any, NamedTuple

import numpy as np
from pycocotools.coco import COCO

from ..io import is_int, is_real, json_type
from .errors import EvaluationError
from .ground_truth import read_json_file

logger = logging.getLogger("detector.evaluation.coco")


def load_results(path: str | os.PathLike) -> list[dict]:
    """The parsed list of a COCO results JSON file (not yet validated: see `validate_results`)."""
    data = read_json_file(path, "results")
    if not isinstance(data, list):
        raise EvaluationError(
            f"results file {os.fspath(path)}: expected a JSON list of detections, got {json_type(data)}"
        )
    return data


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
    image_ids = ids_array(image_ids)
    if len(image_ids) != len(detections):
        raise EvaluationError(f"{len(detections)} detection dicts but {len(image_ids)} image ids")
    lut = _label_lookup(label_to_category_id)

    results: list[dict] = []
    dropped = 0
    with gc_paused():
        for image_id, det in zip(image_ids.tolist(), detections):
            dropped += _append_image_results(results, image_id, det, lut, drop_degenerate)
    if dropped:
        logger.warning("dropped %d detection(s) with zero width or height before COCO evaluation", dropped)
    return results


def _append_image_results(results: list[dict], image_id: int, det: Mapping[str, Any], lut: np.ndarray,
                          drop_degenerate: bool) -> int:
    """Append one image's results entries; returns the number of degenerate boxes dropped."""
    boxes = to_numpy(det["boxes"]).astype(np.float64, copy=False).reshape(-1, 4)  # (D, 4)
    scores = to_numpy(det["scores"]).astype(np.float64, copy=False).reshape(-1)  # (D,)
    labels = to_numpy(det["labels"]).reshape(-1)  # (D,)
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
        pairs = {i: int(v) for i, v in enumerate(to_numpy(label_to_category_id).reshape(-1).tolist())}
    if not pairs:
        raise EvaluationError("label_to_category_id is empty")
    if min(pairs) < 0:
        raise EvaluationError(f"label_to_category_id has a negative label {min(pairs)}")
    lut = np.full(max(pairs) + 1, -1, dtype=np.int64)
    for label, cat in pairs.items():
        lut[label] = cat
    return lut


def ids_array(ids: Any) -> np.ndarray:
    """(N,) int64 image ids from a tensor, an array or any iterable of ints."""
    arr = to_numpy(ids) if hasattr(ids, "detach") or isinstance(ids, np.ndarray) else np.asarray(list(ids))
    arr = arr.reshape(-1)
    if arr.size and arr.dtype.kind not in "iu":
        raise EvaluationError(f"image ids must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def to_numpy(x: Any) -> np.ndarray:
    """A numpy view of a torch tensor (any device; low-precision floats widened) or array-like."""
    if hasattr(x, "detach"):  # a torch tensor; torch itself is not imported here
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < 4:  # bfloat16 / float16
            x = x.float()
        return x.numpy()
    return np.asarray(x)


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
    checked = check_results(results, coco_gt)
    with gc_paused():
        return [
            {"image_id": im, "category_id": c, "bbox": b, "score": sc}
            for im, c, b, sc in zip(checked.image_ids.tolist(), checked.category_ids.tolist(),
                                    checked.boxes.tolist(), checked.scores.tolist())
        ]


class CheckedResults(NamedTuple):
    """Validated results as arrays: n entries."""

    image_ids: np.ndarray  # (n,) int64
    category_ids: np.ndarray  # (n,) int64
    boxes: np.ndarray  # (n, 4) float64 XYWH
    scores: np.ndarray  # (n,) float64


def check_results(results: Any, coco_gt: COCO) -> CheckedResults:
    """`validate_results` without building the output dicts."""
    if not isinstance(results, list):
        raise EvaluationError(f"results: expected a list of detections, got {json_type(results)}")
    n = len(results)
    if n == 0:
        return CheckedResults(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0))
    with gc_paused():
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
    return CheckedResults(img_arr, cat_arr, boxes, score_arr)


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
            raise EvaluationError(f"results entry {i}: expected an object, got {json_type(r)}")
        try:
            image_id, category_id, bbox, score = r["image_id"], r["category_id"], r["bbox"], r["score"]
        except KeyError as e:
            raise EvaluationError(f"results entry {i}: missing key {e.args[0]!r}") from None
        if not is_int(image_id):
            raise EvaluationError(f"results entry {i}: image_id must be an integer, got {image_id!r}")
        if not is_int(category_id):
            raise EvaluationError(f"results entry {i}: category_id must be an integer, got {category_id!r}")
        if not is_real(score):
            raise EvaluationError(f"results entry {i}: score must be a number, got {score!r}")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(is_real(v) for v in bbox):
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
def gc_paused():
    """Pause the cyclic garbage collector while building many small dicts (which creates no
    cycles): with a large heap its repeated passes otherwise triple the time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


