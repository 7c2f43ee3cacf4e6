"""COCO ground truth for box evaluation: loaded once and checked once.

`load_coco_gt` checks the structure pycocotools needs before it builds its index; `check_coco_gt`
is that check for a ``COCO`` object built elsewhere, run once per object (`evaluate_coco` calls
it on every evaluation, and a validation loop evaluates against the same object many times).
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Mapping
from typing import Any

from pycocotools.coco import COCO

from ..io import JSONReadError, is_int, is_real, json_type, read_json
from .errors import EvaluationError, maybe_quiet

_CHECKED: "weakref.WeakSet[Any]" = weakref.WeakSet()  # COCO objects whose dataset passed the check


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
        dataset, where = read_json_file(source, "ground-truth"), f"ground-truth file {os.fspath(source)}"
    _check_gt_dataset(dataset, where)
    with maybe_quiet(quiet):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    _CHECKED.add(coco)
    return coco


def check_coco_gt(coco_gt: Any) -> None:
    """`load_coco_gt`'s check of an already-built ``COCO`` (pycocotools' or faster_coco_eval's), once per object."""
    if coco_gt not in _CHECKED:
        _check_gt_dataset(coco_gt.dataset, "ground truth")
        _CHECKED.add(coco_gt)


def read_json_file(path: str | os.PathLike, what: str) -> Any:
    try:
        return read_json(path)
    except JSONReadError as e:
        if e.missing:
            raise EvaluationError(f"{what} file not found: {e.path}") from None
        if e.invalid:
            raise EvaluationError(f"{what} file {e.path} is not valid JSON: {e.problem}") from None
        raise EvaluationError(f"cannot read {what} file {e.path}: {e.problem}") from None


def _check_gt_dataset(dataset: Any, where: str) -> None:
    if not isinstance(dataset, Mapping):
        raise EvaluationError(
            f"{where}: expected a JSON object with images/annotations/categories, got {json_type(dataset)}"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise EvaluationError(f"{where}: missing or non-list {key!r}")
    for key, required in (("images", ("id",)), ("categories", ("id", "name")),
                          ("annotations", ("id", "image_id", "category_id", "bbox", "area", "iscrowd"))):
        for i, entry in enumerate(dataset[key]):
            if not isinstance(entry, Mapping):
                raise EvaluationError(f"{where}: {key}[{i}] is {json_type(entry)}, expected an object")
            missing = [k for k in required if k not in entry]
            if missing:
                raise EvaluationError(f"{where}: {key}[{i}] lacks {', '.join(repr(k) for k in missing)}")
    for key, field in (("images", "id"), ("categories", "id"), ("annotations", "image_id"),
                       ("annotations", "category_id")):
        values = [entry[field] for entry in dataset[key]]
        if not set(map(type, values)) <= {int}:
            i = next(i for i, v in enumerate(values) if not is_int(v))
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
        if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(is_real(v) for v in box)):
            raise EvaluationError(f"{where}: annotations[{i}] bbox must be 4 numbers [x, y, w, h], got {box!r}")
        if not all(math.isfinite(v) for v in box):
            raise EvaluationError(f"{where}: annotations[{i}] has a non-finite bbox {box!r}")
        if box[2] < 0 or box[3] < 0:
            raise EvaluationError(f"{where}: annotations[{i}] has a negative bbox width or height {box!r}")
