"""detections_to_coco_results (XYXY -> XYWH, labels -> category ids) and results validation."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from detector.evaluation import (
    EvaluationError,
    detections_to_coco_results,
    evaluate_coco,
    load_coco_gt,
    load_results,
    validate_results,
)

# Contiguous labels 0, 1, 2 stand for COCO's non-contiguous ids 1, 7, 42.
LABEL_TO_CAT = [1, 7, 42]


def test_xyxy_to_xywh_and_category_ids():
    detections = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.5, 1.5, 100.5, 51.5]]),
            "scores": torch.tensor([0.9, 0.25]),
            "labels": torch.tensor([2, 0]),
        },
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)},
        {
            "boxes": np.array([[5.0, 5.0, 6.0, 8.0]], dtype=np.float32),
            "scores": np.array([0.5], dtype=np.float32),
            "labels": np.array([1]),
        },
    ]
    results = detections_to_coco_results(detections, torch.tensor([11, 12, 13]), LABEL_TO_CAT)
    assert results == [
        {"image_id": 11, "category_id": 42, "bbox": [10.0, 20.0, 20.0, 40.0], "score": pytest.approx(0.9)},
        {"image_id": 11, "category_id": 1, "bbox": [0.5, 1.5, 100.0, 50.0], "score": pytest.approx(0.25)},
        {"image_id": 13, "category_id": 7, "bbox": [5.0, 5.0, 1.0, 3.0], "score": 0.5},
    ]
    values = [v for r in results for v in (r["image_id"], r["category_id"], r["score"], *r["bbox"])]
    assert all(type(v) in (int, float) for v in values)
    json.dumps(results, allow_nan=False)
    # A mapping works the same as a sequence, and so do numpy ids.
    assert detections_to_coco_results(detections, np.array([11, 12, 13]), {0: 1, 1: 7, 2: 42}) == results


def test_bfloat16_scores_and_gpu_style_tensors_are_accepted():
    detections = [{"boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0]]), "scores": torch.tensor([0.5], dtype=torch.bfloat16),
                   "labels": torch.tensor([0])}]
    (r,) = detections_to_coco_results(detections, [3], LABEL_TO_CAT)
    assert r["score"] == 0.5 and r["bbox"] == [0.0, 0.0, 4.0, 4.0]


def test_degenerate_boxes_are_dropped_with_a_warning_or_raise(caplog):
    detections = [{"boxes": np.array([[0.0, 0.0, 4.0, 4.0], [7.0, 3.0, 7.0, 9.0]]), "scores": np.array([0.5, 0.4]),
                   "labels": np.array([0, 0])}]
    with caplog.at_level(logging.WARNING):
        results = detections_to_coco_results(detections, [3], LABEL_TO_CAT)
    assert [r["bbox"] for r in results] == [[0.0, 0.0, 4.0, 4.0]]
    assert "dropped 1 detection" in caplog.text
    with pytest.raises(EvaluationError, match="detection 1 has zero or negative width"):
        detections_to_coco_results(detections, [3], LABEL_TO_CAT, drop_degenerate=False)


@pytest.mark.parametrize(
    "boxes, scores, labels, message",
    [
        ([[0, 0, float("nan"), 4]], [0.5], [0], "non-finite"),
        ([[0, 0, 4, 4]], [float("inf")], [0], "non-finite"),
        ([[0, 0, 4, 4]], [0.5], [3], "outside the label map"),
        ([[0, 0, 4, 4]], [0.5], [-1], "outside the label map"),
        ([[0, 0, 4, 4]], [0.5, 0.4], [0], "1 boxes, 2 scores, 1 labels"),
    ],
)
def test_conversion_rejects_bad_detections(boxes, scores, labels, message):
    detections = [{"boxes": np.array(boxes, dtype=float), "scores": np.array(scores), "labels": np.array(labels)}]
    with pytest.raises(EvaluationError, match=message):
        detections_to_coco_results(detections, [1], LABEL_TO_CAT)


def test_conversion_rejects_mismatched_ids():
    with pytest.raises(EvaluationError, match="1 detection dicts but 2 image ids"):
        detections_to_coco_results([{"boxes": [], "scores": [], "labels": []}], [1, 2], LABEL_TO_CAT)


def test_converted_ground_truth_scores_perfectly(gt_builder):
    # GT with category ids 7 and 42; the "detector" returns the GT boxes as XYXY labels 1 and 2.
    gt = gt_builder([(5, 7, [10, 20, 30, 40]), (5, 42, [100, 100, 50, 60])], images=(5,),
                    categories=[(1, "a"), (7, "b"), (42, "c")])
    detections = [{"boxes": torch.tensor([[10.0, 20.0, 40.0, 60.0], [100.0, 100.0, 150.0, 160.0]]),
                   "scores": torch.tensor([0.8, 0.7]), "labels": torch.tensor([1, 2])}]
    m = evaluate_coco(load_coco_gt(gt), detections_to_coco_results(detections, [5], LABEL_TO_CAT))
    assert m["AP"] == pytest.approx(1.0, abs=1e-12)
    assert m["per_class"] == {"a": -1.0, "b": pytest.approx(1.0), "c": pytest.approx(1.0)}


# ----------------------------------------------------------------------------- validation

GOOD = {"image_id": 1, "category_id": 7, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}


@pytest.fixture
def coco_gt(gt_builder):
    return load_coco_gt(gt_builder([(1, 7, [0, 0, 10, 10])], images=(1, 2), categories=[(7, "b")]))


@pytest.mark.parametrize(
    "bad, message",
    [
        ({**GOOD, "bbox": [1.0, float("nan"), 3.0, 4.0]}, r"entry 1: non-finite bbox"),
        ({**GOOD, "bbox": [1.0, 2.0, float("inf"), 4.0]}, r"entry 1: non-finite bbox"),
        ({**GOOD, "score": float("nan")}, r"entry 1: non-finite score"),
        ({**GOOD, "score": float("-inf")}, r"entry 1: non-finite score"),
        ({**GOOD, "bbox": [1.0, 2.0, -3.0, 4.0]}, r"entry 1: bbox width and height must be > 0"),
        ({**GOOD, "bbox": [1.0, 2.0, 3.0, 0.0]}, r"entry 1: bbox width and height must be > 0"),
        ({**GOOD, "image_id": 99}, r"entry 1: unknown image_id 99"),
        ({**GOOD, "category_id": 8}, r"entry 1: unknown category_id 8"),
        ({k: v for k, v in GOOD.items() if k != "score"}, r"entry 1: missing key 'score'"),
        ({**GOOD, "bbox": [1.0, 2.0, 3.0]}, r"entry 1: bbox must be a list of 4 numbers"),
        ({**GOOD, "bbox": "1 2 3 4"}, r"entry 1: bbox must be a list of 4 numbers"),
        ({**GOOD, "bbox": [1.0, 2.0, 3.0, None]}, r"entry 1: bbox must be a list of 4 numbers"),
        ({**GOOD, "image_id": "1"}, r"entry 1: image_id must be an integer"),
        ({**GOOD, "image_id": 1.5}, r"entry 1: image_id must be an integer"),
        ({**GOOD, "category_id": True}, r"entry 1: category_id must be an integer"),
        ({**GOOD, "score": "high"}, r"entry 1: score must be a number"),
        ([1, 2, 3, 4], r"entry 1: expected an object, got a list"),
    ],
)
def test_bad_entries_raise_with_index(coco_gt, bad, message):
    with pytest.raises(EvaluationError, match=message) as info:
        evaluate_coco(coco_gt, [GOOD, bad, GOOD])
    assert "\n" not in str(info.value)


def test_wrong_top_level_structure(coco_gt):
    with pytest.raises(EvaluationError, match="expected a list of detections, got an object"):
        validate_results({"annotations": [GOOD]}, coco_gt)


def test_validation_normalises_and_copies(coco_gt):
    entry = {**GOOD, "bbox": (1, 2, 3, 4), "extra": "kept out", "image_id": np.int64(1)}
    (out,) = validate_results([entry], coco_gt)
    assert out == {"image_id": 1, "category_id": 7, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}
    assert "extra" in entry and out is not entry


@pytest.mark.parametrize(
    "text, message",
    [
        ('[{"image_id": 1, ', "is not valid JSON"),
        ('{"image_id": 1}', "expected a JSON list of detections, got an object"),
        ('[{"image_id": 1, "category_id": 7, "bbox": [1, 2, 3, 4], "score": NaN}]', "entry 0: non-finite score"),
    ],
)
def test_bad_results_files(tmp_path, coco_gt, text, message):
    path = tmp_path / "dt.json"
    path.write_text(text)
    with pytest.raises(EvaluationError, match=message):
        evaluate_coco(coco_gt, path)


def test_missing_results_file(tmp_path, coco_gt):
    with pytest.raises(EvaluationError, match="results file not found"):
        load_results(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("categories"), "missing or non-list 'categories'"),
        (lambda d: d["annotations"][0].pop("area"), r"annotations\[0\] lacks 'area'"),
        (lambda d: d["images"].append("x"), r"images\[2\] is a string"),
        (lambda d: d["annotations"][0].update(id=0), r"annotations\[0\] has id 0, which pycocotools reads as"),
        (lambda d: d["annotations"].append(dict(d["annotations"][0])), r"annotations\[1\] repeats annotation id 1"),
        (lambda d: d["images"][1].update(id="2"), r"images\[1\] id must be an integer, got '2'"),
        (lambda d: d["annotations"][0].update(category_id=7.0), r"annotations\[0\] category_id must be an integer"),
    ],
)
def test_bad_ground_truth(gt_builder, mutate, message):
    gt = gt_builder([(1, 7, [0, 0, 10, 10])], images=(1, 2), categories=[(7, "b")])
    mutate(gt)
    with pytest.raises(EvaluationError, match=message):
        load_coco_gt(gt)
