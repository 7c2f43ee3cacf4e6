"""COCO ground truth for box evaluation: loaded once and checked once.

`load_coco_gt` checks the structure pycocotools needs before it builds its index; `check_coco_gt`
is that check for a ``COCO`` object built elsewhere, run once per object (`evaluate_coco` calls
it on every evaluation, and a validation loop evaluates against the same object many times).
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Mapping
from typing import Any

from pycocotools.coco import COCO

from ..coco_format import COCOFormatError, check_coco_instances
from ..io import JSONReadError, read_json
from .errors import EvaluationError, maybe_quiet

logger = logging.getLogger(__name__)
_CHECKED: "weakref.WeakSet[Any]" = weakref.WeakSet()  # COCO objects whose dataset passed the check


def load_coco_gt(source: str | os.PathLike | Mapping[str, Any], *, quiet: bool = True) -> COCO:
    """A pycocotools ``COCO`` from a COCO JSON path or an already-loaded dict.

    The file is checked first by detector/coco_format.py's rule with scoring's policy (the
    structure pycocotools needs, ids unique and declared, no box pycocotools cannot score), so a
    bad file fails here with one clear line instead of a KeyError deep inside COCOeval or a
    silently wrong number. Boxes of zero size or wholly outside their image are scored as
    pycocotools scores them (missed objects, as in the official COCO numbers), with one logged
    warning that counts them. A dict is used
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
    """The shared COCO rule with scoring's policy: refuse what pycocotools cannot score, drop nothing."""
    try:
        instances = check_coco_instances(dataset, bad_boxes="refuse", scoring_fields=True)
    except COCOFormatError as err:
        raise EvaluationError(f"{where}: {err}") from None
    if instances.unmatchable:
        logger.warning("%s: %d ground-truth box(es) of zero size or wholly outside the image: scored as missed "
                       "objects, as pycocotools does (they lower recall and AP)", where, instances.unmatchable)
