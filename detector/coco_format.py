"""The one check of a COCO instances dict, shared by training (detector/data) and scoring (detector/evaluation).

Shape symbols: n images, K categories, B annotations (boxes).

The rule, checked in this order; anything it refuses raises `COCOFormatError`, one line naming
the entry (``images[3]``, ``annotations[7]``):
- the top level is an object with the lists "images", "categories" and "annotations" (a training
  file may leave "annotations" out: images to predict on);
- every entry is an object; an image has an "id"; a category an "id" and a "name"; an annotation
  an "image_id", a "category_id" and a "bbox". Scoring also needs each annotation's "id", "area"
  and "iscrowd" (`scoring_fields=True`): pycocotools reads them all;
- ids are JSON integers (not strings, floats or booleans) that fit 64 bits; annotation ids, where
  required, are not 0 and not repeated (pycocotools records a match as the matched annotation's
  id, 0 meaning "unmatched", and indexes annotations by id);
- image ids and category ids are unique, and every annotation's image_id and category_id is
  declared (pycocotools would silently leave such an annotation out of the score);
- a bbox is 4 JSON numbers [x, y, w, h] within float64's range;
- an image's declared width/height, when it is a number, is positive and fits 64 bits (one that
  is absent or not a number is undeclared: training reads it from the image header);
- a box is *bad* (`box_rule`) if it is not finite, has a negative width or height, has a zero
  width or height, or lies wholly outside its image; a box partly outside is clipped to it, and
  that is not an error.

Bad boxes are the one place where the two callers differ, by the `bad_boxes` policy:
- "drop" (training) returns them all, for `AnnotationTable.build` to drop and count: one bad box
  must not stop a COCO-sized run, and no anchor can learn from it;
- "refuse" (scoring) raises naming the first box pycocotools cannot score (not finite, negative
  size: UNSCORABLE) and keeps the rest as the file has them: a zero-size or wholly-outside box is
  an object no detection can match, and pycocotools counts it as missed, as the official COCO
  numbers do (train2017 holds such boxes); dropping it would change AP, so the caller only
  reports how many there are (`CocoInstances.unmatchable`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from operator import itemgetter
from typing import Any, Literal, NamedTuple

import numpy as np

from detector.io import is_int, is_real, json_type

_SINGULAR = {"images": "image", "categories": "category", "annotations": "annotation"}

# Why `box_rule` calls a box bad: one code per box, 0 for a good box.
GOOD, NOT_FINITE, NEGATIVE_SIZE, ZERO_SIZE, OUTSIDE = 0, 1, 2, 3, 4
UNSCORABLE = (NOT_FINITE, NEGATIVE_SIZE)  # pycocotools' IoU is meaningless for these: scoring refuses them
UNMATCHABLE = (ZERO_SIZE, OUTSIDE)  # valid to score, but no detection can ever match them


class COCOFormatError(ValueError):
    """A COCO instances dict that breaks the rule above; the message is one line naming the entry."""


class BoxCheck(NamedTuple):
    """What `box_rule` says of B boxes.

    problem: (B,) int8, GOOD, NOT_FINITE, NEGATIVE_SIZE, ZERO_SIZE (a width or height of 0) or
        OUTSIDE (nothing left after clipping to the image).
    clipped: (B, 4) float64 XYXY, the boxes clipped to their image.
    partly_outside: (B,) bool, good boxes that clipping changed.
    """

    problem: np.ndarray
    clipped: np.ndarray
    partly_outside: np.ndarray


def box_rule(boxes: np.ndarray, sizes: np.ndarray) -> BoxCheck:
    """Which boxes are bad, and the boxes clipped to their image.

    Args:
        boxes: (B, 4) XYXY absolute pixels.
        sizes: (B, 2) (height, width) of each box's image; inf where the size is unknown (then
            only the image's top and left edges, at 0, clip).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    finite = np.isfinite(boxes).all(axis=1)
    positive = finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    clipped = boxes.copy()
    np.clip(clipped[:, 0::2], 0.0, sizes[:, 1:2], out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], 0.0, sizes[:, 0:1], out=clipped[:, 1::2])
    nonempty = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    problem = np.full(len(boxes), GOOD, dtype=np.int8)
    problem[positive & ~nonempty] = OUTSIDE
    problem[finite & ~positive] = ZERO_SIZE
    problem[finite & ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))] = NEGATIVE_SIZE
    problem[~finite] = NOT_FINITE
    partly_outside = (problem == GOOD) & (clipped != boxes).any(axis=1)
    return BoxCheck(problem, clipped, partly_outside)


@dataclass(frozen=True)
class CocoInstances:
    """The arrays of a checked COCO instances dict, entries in file order.

    Attributes:
        images, annotations: the dict's own lists (not copied).
        image_ids: (n,) int64.
        sizes: (n, 2) int64 declared (height, width); 0 where the image does not declare it.
        category_ids: (K,) int64, increasing; a label is an index into it.
        category_names: (K,) the categories' "name" values, in `category_ids` order.
        box_image: (B,) int64, the row in `images` of each annotation's image.
        box_label: (B,) int64, the label (index into `category_ids`) of each annotation.
        boxes: (B, 4) float64 XYXY: the file's [x, y, w, h] as [x, y, x + w, y + h].
        crowd: (B,) bool, iscrowd read as true or false (absent: false).
    """

    images: list
    annotations: list
    image_ids: np.ndarray
    sizes: np.ndarray
    category_ids: np.ndarray
    category_names: list
    box_image: np.ndarray
    box_label: np.ndarray
    boxes: np.ndarray
    crowd: np.ndarray

    @cached_property
    def box_problems(self) -> np.ndarray:
        """(B,) int8, `box_rule`'s code of each box, with the declared sizes (of an undeclared one only
        the 0 edges clip); training applies the same rule with the sizes it completed from the images."""
        known = np.where(self.sizes > 0, self.sizes, np.inf)  # (n, 2)
        return box_rule(self.boxes, known[self.box_image]).problem

    @property
    def unmatchable(self) -> int:
        """How many boxes are UNMATCHABLE (zero size, wholly outside the image)."""
        return int(np.isin(self.box_problems, UNMATCHABLE).sum())


def check_coco_instances(
    dataset: Any,
    *,
    bad_boxes: Literal["drop", "refuse"],
    scoring_fields: bool = False,
) -> CocoInstances:
    """Check `dataset` (a parsed instances JSON) against the module's rule.

    Args:
        bad_boxes: "drop" returns bad boxes as they are, for the caller to drop with `box_rule`
            (`CocoInstances.box_problems`, `AnnotationTable.build`); "refuse" raises naming the
            first UNSCORABLE one and keeps the UNMATCHABLE ones (see the module doc).
        scoring_fields: also require what pycocotools scores with (annotation "id", "area",
            "iscrowd"; unique non-zero annotation ids; the "annotations" list itself).

    Raises:
        COCOFormatError: one line naming the offending entry.
    """
    if bad_boxes not in ("drop", "refuse"):
        raise ValueError(f"bad_boxes must be 'drop' or 'refuse', got {bad_boxes!r}")
    images = _entries(dataset, "images")
    annotations = _entries(dataset, "annotations", optional=not scoring_fields)
    required = ("id", "image_id", "category_id", "bbox", "area", "iscrowd") if scoring_fields else (
        "image_id", "category_id", "bbox")
    if scoring_fields:  # fields no column below reads ("area", "iscrowd") must be there too
        _require(annotations, "annotations", required)
    category_ids, category_names = check_categories(dataset)

    image_ids = _id_column(images, "images", "id", ("id",))
    ann_image = _id_column(annotations, "annotations", "image_id", required)
    ann_category = _id_column(annotations, "annotations", "category_id", required)
    _refuse_repeats(image_ids, "images", "image")
    if scoring_fields:
        ann_ids = _id_column(annotations, "annotations", "id", required)
        zero = np.flatnonzero(ann_ids == 0)
        if len(zero):
            raise COCOFormatError(f"annotations[{zero[0]}] has id 0, which pycocotools reads as 'unmatched'; "
                                  "number annotations from 1")
        _refuse_repeats(ann_ids, "annotations", "annotation")

    box_image = index_of(ann_image, image_ids)
    missing = np.flatnonzero(box_image < 0)
    if len(missing):
        k = int(missing[0])
        raise COCOFormatError(f"{_annotation(k, annotations)} refers to unknown image_id {int(ann_image[k])}")
    box_label = index_of(ann_category, category_ids)
    missing = np.flatnonzero(box_label < 0)
    if len(missing):
        k = int(missing[0])
        name = images[box_image[k]].get("file_name", f"images[{box_image[k]}]")
        raise COCOFormatError(
            f"{_annotation(k, annotations)} of image {name!r} has unknown category_id {int(ann_category[k])} "
            f"(declared: {category_ids.tolist()})")

    sizes = _declared_sizes(images)
    xyxy = _bboxes(annotations, _column(annotations, "annotations", "bbox", required))
    with np.errstate(over="ignore"):  # x + w beyond float64 is inf: a bad box, not an error
        xyxy[:, 2:] += xyxy[:, :2]
    instances = CocoInstances(
        images=images,
        annotations=annotations,
        image_ids=image_ids,
        sizes=sizes,
        category_ids=category_ids,
        category_names=category_names,
        box_image=box_image,
        box_label=box_label,
        boxes=xyxy,
        crowd=np.array([bool(a.get("iscrowd", 0)) for a in annotations], dtype=bool),
    )
    if bad_boxes == "refuse":
        problem = instances.box_problems
        unscorable = np.flatnonzero(np.isin(problem, UNSCORABLE))
        if len(unscorable):
            _refuse_box(int(unscorable[0]), problem, annotations)
    return instances


def check_categories(dataset: Any) -> tuple[np.ndarray, list]:
    """The categories of `dataset`: ids (K,) int64 increasing, and their "name" values in that order.

    Raises:
        COCOFormatError: not an object, "categories" missing or not a list, an entry without an
            integer "id" or a "name", a repeated or negative id.
    """
    categories = _entries(dataset, "categories")
    _require(categories, "categories", ("id", "name"))
    ids = _id_column(categories, "categories", "id", ("id", "name"))
    _refuse_repeats(ids, "categories", "category")
    if len(ids) and ids.min() < 0:  # refused here, at setup, not at the first validation that predicts it
        i = int(np.argmin(ids))
        raise COCOFormatError(f"categories[{i}] ({categories[i]['name']!r}) has id {int(ids[i])}: a category id must "
                              "be 0 or more to be scored")
    order = np.argsort(ids, kind="stable")
    return ids[order], [categories[i]["name"] for i in order]


def index_of(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(len(values),) int64, the index of each value in `table` (unique ids, any order), or -1 if absent."""
    if len(table) == 0:
        return np.full(len(values), -1, dtype=np.int64)
    order = np.argsort(table, kind="stable")
    pos = np.clip(np.searchsorted(table[order], values), 0, len(table) - 1)
    return np.where(table[order][pos] == values, order[pos], -1).astype(np.int64)


def _entries(dataset: Any, key: str, optional: bool = False) -> list:
    """dataset[key], which must be a list."""
    if not isinstance(dataset, Mapping):
        raise COCOFormatError(
            f"top level must be a JSON object with images/annotations/categories, got {json_type(dataset)}")
    entries = dataset.get(key, [] if optional else None)
    if not isinstance(entries, list):
        raise COCOFormatError(f"missing or non-list {key!r}")
    return entries


def _require(entries: list, key: str, required: tuple[str, ...]) -> None:
    """Every entry is an object holding the `required` fields."""
    try:  # the common path, one C-level pass; the loop below runs only to name an offender
        deque(map(itemgetter(*required), entries), maxlen=0)
        return
    except (KeyError, TypeError, IndexError):
        pass
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise COCOFormatError(f"{key}[{i}] is {json_type(entry)}, expected an object")
        lacking = [f for f in required if f not in entry]
        if lacking:
            raise COCOFormatError(f"{key}[{i}] lacks {', '.join(repr(f) for f in lacking)}")


def _id_column(entries: list, key: str, field: str, required: tuple[str, ...]) -> np.ndarray:
    """(len(entries),) int64 of entry[field]; anything but a JSON integer within 64 bits is refused.

    An entry that is not an object or lacks one of the `required` fields is named as `_require` does.
    """
    values = _column(entries, key, field, required)
    if not set(map(type, values)) <= {int}:
        for i, v in enumerate(values):
            if not is_int(v):
                raise COCOFormatError(f"{key}[{i}] {field} must be an integer, got {v!r}")
        values = [int(v) for v in values]  # numpy integers
    try:
        return np.array(values, dtype=np.int64).reshape(-1)
    except OverflowError:
        i = next(i for i, v in enumerate(values) if not -2**63 <= v < 2**63)
        raise COCOFormatError(
            f"malformed {_SINGULAR[key]} entry: {key}[{i}] {field} {values[i]} does not fit 64 bits") from None


def _column(entries: list, key: str, field: str, required: tuple[str, ...]) -> list:
    try:
        return [e[field] for e in entries]
    except (KeyError, TypeError, IndexError):
        _require(entries, key, required)  # raises naming the entry
        raise


def _refuse_repeats(ids: np.ndarray, key: str, what: str) -> None:
    unique, first = np.unique(ids, return_index=True)
    if len(unique) != len(ids):
        seen = np.zeros(len(ids), dtype=bool)
        seen[first] = True
        i = int(np.flatnonzero(~seen)[0])
        raise COCOFormatError(f"duplicate {what} ids: {key}[{i}] repeats {what} id {int(ids[i])}")


def _declared_sizes(images: list) -> np.ndarray:
    """(n, 2) int64 (height, width); 0 where absent or not a number (training reads the header)."""
    sizes = np.zeros((len(images), 2), dtype=np.int64)
    for i, im in enumerate(images):
        try:
            sizes[i] = (int(im["height"]), int(im["width"]))
        except OverflowError:  # infinite, or beyond 64 bits
            raise COCOFormatError(f"images[{i}] {_file_name(im)} declares a width or height out of range") from None
        except (KeyError, TypeError, ValueError):
            sizes[i] = -1
    if (sizes == 0).any() or (sizes < -1).any():
        i = int(np.flatnonzero(((sizes == 0) | (sizes < -1)).any(axis=1))[0])
        raise COCOFormatError(f"images[{i}] {_file_name(images[i])} declares a non-positive width or height")
    sizes[sizes == -1] = 0
    return sizes


def _bboxes(annotations: list, raw: list) -> np.ndarray:
    """(B, 4) float64 XYWH of the `raw` bbox values; anything but 4 JSON numbers within float64's range is refused."""
    if not raw:
        return np.zeros((0, 4))
    # numpy would read null as NaN and "12" as 12.0: only JSON numbers (int, float) take the bulk path
    if (set(map(type, raw)) <= {list} and set(map(len, raw)) == {4}
            and set(map(type, chain.from_iterable(raw))) <= {int, float}):
        try:
            return np.array(raw, dtype=np.float64)
        except OverflowError:  # an integer beyond float range: named below
            pass
    for k, box in enumerate(raw):  # the rare path: name the offender, or convert numpy numbers
        if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(_fits_float(v) for v in box)):
            ann_id = annotations[k].get("id")
            name = f"annotations[{k}]" if ann_id is None else f"annotation {ann_id!r}"
            raise COCOFormatError(f"{name}: bbox must be 4 numbers, got {box!r} (annotations[{k}])")
    return np.array([[float(v) for v in box] for box in raw], dtype=np.float64)


def _fits_float(v: Any) -> bool:
    """A JSON number that float64 holds (inf and NaN do: they are bad boxes, not malformed ones)."""
    if not is_real(v):
        return False
    try:
        float(v)
    except OverflowError:
        return False
    return True


def _refuse_box(k: int, problem: np.ndarray, annotations: list) -> None:
    box = annotations[k]["bbox"]
    why = {NOT_FINITE: "a non-finite bbox", NEGATIVE_SIZE: "a negative bbox width or height"}[int(problem[k])]
    ann_id = annotations[k].get("id")
    raise COCOFormatError(f"annotations[{k}] has {why} {box!r} (annotation {ann_id!r}): pycocotools cannot score it "
                          "(training drops such boxes)")


def _annotation(k: int, annotations: list) -> str:
    """'annotation <id> (annotations[k])': the id users search for, and the index to find it by."""
    ann_id = annotations[k].get("id")
    return f"annotations[{k}]" if ann_id is None else f"annotation {ann_id!r} (annotations[{k}])"


def _file_name(image: Mapping) -> str:
    return repr(image.get("file_name", "(no file_name)"))
