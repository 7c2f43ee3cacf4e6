"""The one COCO instances check (detector/coco_format.py), against hand-computed expectations,
and the two callers' policies on the same file: training drops every bad box; scoring refuses the
ones pycocotools cannot score and scores the rest as the file has them."""

from __future__ import annotations

import json
import logging
import re
import warnings

import numpy as np
import pytest

from detector.coco_format import (
    GOOD,
    NEGATIVE_SIZE,
    NOT_FINITE,
    OUTSIDE,
    ZERO_SIZE,
    COCOFormatError,
    box_rule,
    check_coco_instances,
)
from detector.data import COCODetection, DatasetError, DatasetWarning
from detector.evaluation import EvaluationError, load_coco_gt
from tests.data.fixtures import coco_json, write_coco

INF = float("inf")
NAN = float("nan")


def test_box_rule_by_hand():
    # image 20 high, 30 wide unless said otherwise; boxes XYXY
    boxes = np.array([
        [1, 2, 11, 12],        # inside
        [-5, 2, 5, 12],        # partly outside on the left: clipped to x 0
        [25, 15, 40, 25],      # partly outside right and bottom: clipped to (30, 20)
        [31, 2, 40, 12],       # wholly right of the image
        [-9, -9, -1, -1],      # wholly above-left
        [5, 5, 5, 9],          # zero width
        [5, 9, 8, 4],          # negative height
        [NAN, 1, 4, 4],        # not finite
        [1, 1, INF, 4],        # not finite
        [30, 2, 35, 12],       # touches the right edge only: nothing left after clipping
        [500, 500, 600, 600],  # image of unknown size: only 0 clips
        [-4, 5, 8, 9],         # image of unknown size, partly left of 0
    ], dtype=np.float64)
    sizes = np.array([[20, 30]] * 10 + [[INF, INF]] * 2)
    check = box_rule(boxes, sizes)
    assert check.problem.tolist() == [GOOD, GOOD, GOOD, OUTSIDE, OUTSIDE, ZERO_SIZE, NEGATIVE_SIZE,
                                      NOT_FINITE, NOT_FINITE, OUTSIDE, GOOD, GOOD]
    assert check.partly_outside.tolist() == [False, True, True] + [False] * 8 + [True]
    np.testing.assert_array_equal(check.clipped[[0, 1, 2, 10, 11]],
                                  [[1, 2, 11, 12], [0, 2, 5, 12], [25, 15, 30, 20], [500, 500, 600, 600],
                                   [0, 5, 8, 9]])


def _bad_boxes_file() -> dict:
    """Two images (30 high x 40 wide, and 20 x 20), four good boxes and five bad ones (ids 3, 4, 6, 7, 9)."""
    anns = [
        {"image_id": 1, "category_id": 3, "bbox": [1, 1, 10, 10]},    # 1 good
        {"image_id": 1, "category_id": 5, "bbox": [-5, 2, 10, 10]},   # 2 good (clipped)
        {"image_id": 1, "category_id": 3, "bbox": [5, 5, 0, 4]},      # 3 zero width
        {"image_id": 2, "category_id": 3, "bbox": [5, 5, 4, -2]},     # 4 negative height
        {"image_id": 2, "category_id": 5, "bbox": [15, 15, 10, 10]},  # 5 good (clipped)
        {"image_id": 2, "category_id": 5, "bbox": [20, 1, 5, 5]},     # 6 outside (x from the width on)
        {"image_id": 1, "category_id": 3, "bbox": [1e308, 1, 1e308, 4]},  # 7 x + w overflows: not finite
        {"image_id": 1, "category_id": 3, "bbox": [39, 29, 1, 1]},    # 8 good: the last pixel
        {"image_id": 2, "category_id": 3, "bbox": [-10, -10, 5, 5]},  # 9 outside (above-left)
    ]
    return coco_json([(1, "a.jpg", 30, 40), (2, "b.jpg", 20, 20)], anns, [(3, "cat"), (5, "dog")])


BAD_IDS = {3: ZERO_SIZE, 4: NEGATIVE_SIZE, 6: OUTSIDE, 7: NOT_FINITE, 9: OUTSIDE}


def test_check_flags_each_bad_box_and_why():
    data = _bad_boxes_file()
    coco = check_coco_instances(data, bad_boxes="drop")
    expected = [BAD_IDS.get(k, GOOD) for k in range(1, 10)]
    assert coco.box_problems.tolist() == expected
    assert coco.image_ids.tolist() == [1, 2] and coco.sizes.tolist() == [[30, 40], [20, 20]]
    assert coco.category_ids.tolist() == [3, 5] and coco.category_names == ["cat", "dog"]
    assert coco.box_image.tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 1]
    assert coco.box_label.tolist() == [0, 1, 0, 0, 1, 1, 0, 0, 0]
    np.testing.assert_array_equal(coco.boxes[0], [1, 1, 11, 11])  # XYWH -> XYXY
    with pytest.raises(COCOFormatError, match=r"^annotations\[3\] has a negative bbox width or height "
                                              r"\[5, 5, 4, -2\] \(annotation 4\): pycocotools cannot score it"):
        check_coco_instances(data, bad_boxes="refuse")


def test_training_drops_every_bad_box_and_scoring_refuses_only_the_unscorable(tmp_path, caplog):
    data = _bad_boxes_file()
    ann_file, image_root = write_coco(tmp_path, data)
    with pytest.warns(DatasetWarning, match=r"3 x box of zero or negative size \(dropped\); 2 x box outside its "
                                            r"image \(dropped\); 2 x box partly outside its image \(clipped\)"):
        dataset = COCODetection(ann_file, image_root)
    dropped = set(range(1, 10)) - set(dataset.coco_gt().getAnnIds())
    assert len(dataset.table.boxes) == 4

    # Scoring names one bad box at a time: take each out until the file passes.
    refused, gt = set(), json.loads(ann_file.read_text())
    while True:
        try:
            load_coco_gt(gt)
            break
        except EvaluationError as err:
            k = int(re.search(r"annotations\[(\d+)\]", str(err)).group(1))
            refused.add(gt["annotations"].pop(k)["id"])
    assert dropped == set(BAD_IDS)
    assert refused == {4, 7}  # negative height, not finite
    # the zero-size and wholly-outside boxes (3, 6, 9) stay in the score as missed objects, counted in one warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="detector.evaluation"):
        kept = load_coco_gt(gt)
    assert {3, 6, 9} <= set(kept.getAnnIds())
    assert [r.getMessage() for r in caplog.records if "ground-truth box" in r.getMessage()] == [
        "ground truth: 3 ground-truth box(es) of zero size or wholly outside the image: scored as missed objects, "
        "as pycocotools does (they lower recall and AP)"]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["images"].append({"id": 1, "file_name": "c.jpg", "height": 8, "width": 8}),
     r"duplicate image ids: images\[2\] repeats image id 1"),
    (lambda d: d["categories"].append({"id": 3, "name": "again"}),
     r"duplicate category ids: categories\[2\] repeats category id 3"),
    (lambda d: d["annotations"][1].update(image_id=7),
     r"annotation 2 \(annotations\[1\]\) refers to unknown image_id 7"),
    (lambda d: d["annotations"][0].update(category_id=4),
     r"annotation 1 \(annotations\[0\]\) of image 'a.jpg' has unknown category_id 4 \(declared: \[3, 5\]\)"),
    (lambda d: d["images"][1].update(id="2"), r"images\[1\] id must be an integer, got '2'"),
    (lambda d: d["images"][1].update(id=2.0), r"images\[1\] id must be an integer, got 2.0"),
    (lambda d: d["annotations"][0].update(image_id=True), r"annotations\[0\] image_id must be an integer, got True"),
    (lambda d: d["annotations"][1].update(bbox=[1, 2, "3", 4]),
     r"annotation 2: bbox must be 4 numbers, got \[1, 2, '3', 4\] \(annotations\[1\]\)"),
    (lambda d: d["images"][0].update(height=-3), r"images\[0\] 'a.jpg' declares a non-positive width or height"),
    (lambda d: d["annotations"][0].pop("category_id"), r"annotations\[0\] lacks 'category_id'"),
])
def test_both_callers_refuse_the_same_structure_errors(tmp_path, edit, message):
    data = coco_json([(1, "a.jpg", 30, 40), (2, "b.jpg", 20, 20)],
                     [{"image_id": 1, "category_id": 3, "bbox": [1, 1, 10, 10]},
                      {"image_id": 2, "category_id": 5, "bbox": [2, 2, 5, 5]}], [(3, "cat"), (5, "dog")])
    ann_file, image_root = write_coco(tmp_path, data)
    edit(data)
    ann_file.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=message) as trained:
        COCODetection(ann_file, image_root)
    with pytest.raises(EvaluationError, match=message) as scored:
        load_coco_gt(ann_file)
    for err in (trained.value, scored.value):
        assert str(ann_file) in str(err) and "\n" not in str(err)


def test_scoring_needs_what_pycocotools_reads_and_training_fills_in(tmp_path):
    data = coco_json([(1, "a.jpg", 30, 40)], [{"image_id": 1, "category_id": 3, "bbox": [1, 1, 10, 10]}],
                     [(3, "cat")])
    for a in data["annotations"]:
        del a["id"], a["area"], a["iscrowd"]
    with pytest.raises(COCOFormatError, match=r"annotations\[0\] lacks 'id', 'area', 'iscrowd'"):
        check_coco_instances(data, bad_boxes="refuse", scoring_fields=True)
    assert check_coco_instances(data, bad_boxes="refuse").box_problems.tolist() == [GOOD]
    ann_file, image_root = write_coco(tmp_path, data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetWarning)
        gt = COCODetection(ann_file, image_root).coco_gt()
    assert [(a["id"], a["area"], a["iscrowd"]) for a in gt.dataset["annotations"]] == [(1, 100.0, 0)]


def test_a_file_without_annotations_is_images_to_predict_on_but_not_ground_truth():
    data = {"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "x"}]}
    coco = check_coco_instances(data, bad_boxes="drop")
    assert coco.boxes.shape == (0, 4) and coco.sizes.tolist() == [[0, 0]]  # size undeclared
    with pytest.raises(COCOFormatError, match=r"missing or non-list 'annotations'"):
        check_coco_instances(data, bad_boxes="refuse", scoring_fields=True)


def test_numpy_ids_and_numbers_are_json_numbers():
    data = coco_json([(1, "a.jpg", 30, 40)], [{"image_id": 1, "category_id": 3, "bbox": [1, 1, 10, 10]}],
                     [(3, "cat")])
    data["images"][0]["id"] = np.int64(1)
    data["annotations"][0]["bbox"] = [np.float32(1), 1, np.int32(10), 10.0]
    coco = check_coco_instances(data, bad_boxes="refuse", scoring_fields=True)
    assert coco.image_ids.tolist() == [1] and coco.boxes.tolist() == [[1, 1, 11, 11]]


def test_unknown_policy_is_a_programming_error():
    with pytest.raises(ValueError, match="bad_boxes must be 'drop' or 'refuse'"):
        check_coco_instances({}, bad_boxes="clip")
