"""Ground truth that pycocotools scores silently wrong, or cannot score, is refused by load_coco_gt, one line
naming the entry; boxes it scores as missed objects are kept, as the official numbers keep them.

Each case runs pycocotools itself on the file first, to show what it would have reported."""

from __future__ import annotations

import contextlib
import copy
import io
import logging

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detector.evaluation import EvaluationError, evaluate_coco, load_coco_gt

GOOD_BOX = [10, 10, 20, 20]
DETECTION = {"image_id": 1, "category_id": 1, "bbox": GOOD_BOX, "score": 0.9}  # finds the first object exactly


def _pycocotools_ar100(gt: dict, results: list[dict]) -> float:
    """AR@100 from pycocotools alone, on an unchecked copy of `gt`."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[8])


@pytest.mark.parametrize("edit, message", [
    # pycocotools scores only the declared images and categories: the second object is not counted
    (lambda gt: gt["annotations"][1].update(image_id=2),
     r"annotation 2 \(annotations\[1\]\) refers to unknown image_id 2"),
    (lambda gt: gt["annotations"][1].update(category_id=5),
     r"annotation 2 \(annotations\[1\]\) of image '1.jpg' has unknown category_id 5 \(declared: \[1\]\)"),
])
def test_an_annotation_pycocotools_would_leave_out_is_refused(gt_builder, edit, message):
    gt = gt_builder([(1, 1, GOOD_BOX), (1, 1, [100, 100, 30, 30])])
    results = [DETECTION]
    assert _pycocotools_ar100(gt, results) == pytest.approx(0.5)
    edit(gt)
    assert _pycocotools_ar100(gt, results) == pytest.approx(1.0)  # the missed object vanished from the score
    with pytest.raises(EvaluationError, match=rf"^ground truth: {message}$"):
        load_coco_gt(gt)


@pytest.mark.parametrize("bbox", [[100, 100, 0, 30], [700, 100, 30, 30]], ids=["zero width", "wholly outside"])
def test_a_box_no_detection_can_match_is_scored_as_pycocotools_scores_it(gt_builder, bbox, caplog):
    gt = gt_builder([(1, 1, GOOD_BOX), (1, 1, bbox)])  # images are 640 x 480
    results = [DETECTION]
    reference = _pycocotools_ar100(gt, results)
    assert reference == pytest.approx(0.5)  # a miss that no detection inside the image fixes
    with caplog.at_level(logging.WARNING, logger="detector.evaluation"):
        coco = load_coco_gt(gt)
    assert evaluate_coco(coco, results)["AR100"] == pytest.approx(reference)
    assert any("1 ground-truth box(es) of zero size or wholly outside the image" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("bbox, message", [
    ([100, 100, -5, 30], r"annotations\[1\] has a negative bbox width or height \[100, 100, -5, 30\]"),
    ([100, 100, float("nan"), 30], r"annotations\[1\] has a non-finite bbox \[100, 100, nan, 30\]"),
])
def test_a_box_pycocotools_cannot_score_is_refused(gt_builder, bbox, message):
    gt = gt_builder([(1, 1, GOOD_BOX), (1, 1, bbox)])
    with pytest.raises(EvaluationError, match=rf"^ground truth: {message} \(annotation 2\): pycocotools cannot score"):
        load_coco_gt(gt)


@pytest.mark.parametrize("edit, message", [
    (lambda gt: gt["images"].append(dict(gt["images"][0])), r"duplicate image ids: images\[2\] repeats image id 1"),
    (lambda gt: gt["categories"].append({"id": 1, "name": "again"}),
     r"duplicate category ids: categories\[1\] repeats category id 1"),
])
def test_repeated_image_or_category_ids_are_refused(gt_builder, edit, message):
    gt = gt_builder([(1, 1, GOOD_BOX)], images=(1, 2))
    edit(gt)
    with pytest.raises(EvaluationError, match=rf"^ground truth: {message}$"):
        load_coco_gt(gt)


def test_a_partly_outside_box_is_kept_as_the_file_has_it(gt_builder):
    gt = gt_builder([(1, 1, [630, 470, 30, 30])])  # 640 x 480: reaches 20 px past two edges
    coco = load_coco_gt(gt)
    assert coco.anns[1]["bbox"] == [630, 470, 30, 30]
