"""evaluate_coco against AP values worked out by hand, and per-class AP against COCOeval directly.

pycocotools' AP at one IoU threshold t: detections sorted by score, cumulative TP/FP give
recall rc and precision pr; pr is made non-increasing from the right (pr[i] = max(pr[i:]));
then for each of the 101 recall points r in {0, 0.01, ..., 1} the precision is
pr[searchsorted(rc, r, side="left")], or 0 when that index is past the last detection. AP at t
is the mean of those 101 values; "AP" averages t = 0.50, 0.55, ..., 0.95 (10 thresholds).
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from detector.evaluation import COCO_METRIC_NAMES, NO_GT, EvaluationError, evaluate_coco, load_coco_gt


def det(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": list(bbox), "score": score}


# Two large GT boxes of one class (area 100*100 = 10000 > 96^2 = 9216: "large").
G1 = [0, 0, 100, 100]
G2 = [200, 0, 100, 100]
FAR = [400, 300, 100, 100]  # overlaps nothing; also "large"


@pytest.fixture
def two_box_gt(gt_builder):
    return load_coco_gt(gt_builder([(1, 1, G1), (1, 1, G2)]))


def test_known_ious(two_box_gt):
    # D1 = G1 exactly (IoU 1), score 0.9. D2 = G2 shifted right by 20 px, score 0.8:
    # overlap 80*100 = 8000, union 2*10000 - 8000 = 12000, IoU = 2/3 = 0.667.
    # t in {.50, .55, .60, .65} (4 thresholds): both TP, rc = [.5, 1], pr = [1, 1] -> AP_t = 1.
    # t in {.70, ..., .95} (6 thresholds): D2 is a FP, rc = [.5, .5], pr = [1, .5] -> [1, .5]
    #   after the right-to-left max; r in 0.00..0.50 (51 points) -> index 0 -> 1.0;
    #   r in 0.51..1.00 (50 points) -> index 2, past the end -> 0. AP_t = 51/101.
    # AP = (4 * 1 + 6 * 51/101) / 10 = 710/1010 = 71/101; AP50 = 1; AP75 = 51/101.
    # Recall (maxDets 100): 1 at 4 thresholds, 0.5 at 6 -> AR100 = (4 + 3)/10 = 0.7.
    # AR1: only the top detection D1 per image and class -> recall 0.5 at every t.
    results = [det(1, 1, G1, 0.9), det(1, 1, [220, 0, 100, 100], 0.8)]
    m = evaluate_coco(two_box_gt, results)
    assert m["AP"] == pytest.approx(71 / 101, abs=1e-12)
    assert m["AP50"] == pytest.approx(1.0, abs=1e-12)
    assert m["AP75"] == pytest.approx(51 / 101, abs=1e-12)
    assert m["APl"] == pytest.approx(71 / 101, abs=1e-12)
    assert m["APs"] == NO_GT and m["APm"] == NO_GT  # no small or medium ground truth
    assert m["AR1"] == pytest.approx(0.5, abs=1e-12)
    assert m["AR10"] == pytest.approx(0.7, abs=1e-12)
    assert m["AR100"] == pytest.approx(0.7, abs=1e-12)
    assert m["ARl"] == pytest.approx(0.7, abs=1e-12)
    assert m["ARs"] == NO_GT and m["ARm"] == NO_GT
    assert m["per_class"] == {"thing": pytest.approx(71 / 101, abs=1e-12)}


def test_perfect_detections(gt_builder):
    # A small (20x20 = 400 < 32^2) and a large GT box, both found exactly: AP = 1 everywhere
    # there is ground truth; medium has none. AR1 keeps only the best of the two -> 0.5.
    small, large = [10, 10, 20, 20], [100, 100, 100, 100]
    coco = load_coco_gt(gt_builder([(1, 1, small), (1, 1, large)]))
    m = evaluate_coco(coco, [det(1, 1, small, 0.7), det(1, 1, large, 0.9)])
    for key in ("AP", "AP50", "AP75", "APs", "APl", "AR10", "AR100", "ARs", "ARl"):
        assert m[key] == pytest.approx(1.0, abs=1e-12), key
    assert m["APm"] == NO_GT and m["ARm"] == NO_GT
    assert m["AR1"] == pytest.approx(0.5, abs=1e-12)


def test_false_positive_first(two_box_gt):
    # FP (0.95), TP (0.9), TP (0.8), the same at every IoU threshold (exact boxes):
    # rc = [0, .5, 1], pr = [0, 1/2, 2/3] -> [2/3, 2/3, 2/3]; every recall point lands on a
    # detection -> AP = 2/3. AR1: the single kept detection is the FP -> 0.
    results = [det(1, 1, FAR, 0.95), det(1, 1, G1, 0.9), det(1, 1, G2, 0.8)]
    m = evaluate_coco(two_box_gt, results)
    assert m["AP"] == pytest.approx(2 / 3, abs=1e-12)
    assert m["AP50"] == pytest.approx(2 / 3, abs=1e-12)
    assert m["AR1"] == pytest.approx(0.0, abs=1e-12)
    assert m["AR100"] == pytest.approx(1.0, abs=1e-12)


def test_false_positive_between(two_box_gt):
    # TP (0.9), FP (0.85), TP (0.8): rc = [.5, .5, 1], pr = [1, 1/2, 2/3] -> [1, 2/3, 2/3].
    # r in 0.00..0.50 (51 points) -> index 0 -> 1; r in 0.51..1.00 (50 points) -> index 2 -> 2/3.
    # AP = (51 + 50 * 2/3) / 101 = 253/303 = 0.83498 (not the area under the curve, 0.8333).
    results = [det(1, 1, G1, 0.9), det(1, 1, FAR, 0.85), det(1, 1, G2, 0.8)]
    m = evaluate_coco(two_box_gt, results)
    assert m["AP"] == pytest.approx(253 / 303, abs=1e-12)
    assert m["AP75"] == pytest.approx(253 / 303, abs=1e-12)
    assert m["AR1"] == pytest.approx(0.5, abs=1e-12)


def test_two_classes_and_a_class_without_ground_truth(gt_builder):
    # "cat" (id 3): found perfectly -> 1. "dog" (id 7): the TP, FP, TP case -> 253/303.
    # "bird" (id 9): no ground truth, one detection: -1 for the class, left out of the mean.
    # AP = (1 + 253/303) / 2.
    gt = gt_builder([(1, 3, G1), (1, 7, G2), (2, 7, G1)], images=(1, 2),
                    categories=[(3, "cat"), (7, "dog"), (9, "bird")])
    coco = load_coco_gt(gt)
    results = [
        det(1, 3, G1, 0.5),
        det(2, 7, G1, 0.9), det(1, 7, FAR, 0.85), det(1, 7, G2, 0.8),
        det(2, 9, FAR, 0.99),
    ]
    m = evaluate_coco(coco, results)
    assert m["per_class"] == {
        "cat": pytest.approx(1.0, abs=1e-12),
        "dog": pytest.approx(253 / 303, abs=1e-12),
        "bird": NO_GT,
    }
    assert m["AP"] == pytest.approx((1 + 253 / 303) / 2, abs=1e-12)
    assert "per_class" not in evaluate_coco(coco, results, per_class=False)


def test_empty_results_give_zeros(two_box_gt):
    m = evaluate_coco(two_box_gt, [])
    for key in ("AP", "AP50", "AP75", "APl", "AR1", "AR10", "AR100", "ARl"):
        assert m[key] == 0.0, key
    assert m["APs"] == NO_GT  # still no small ground truth: not a score
    assert m["per_class"] == {"thing": 0.0}
    json.dumps(m, allow_nan=False)


def test_result_keys_and_json_safety(synthetic_gt_dt):
    gt, results = synthetic_gt_dt
    m = evaluate_coco(load_coco_gt(gt), results)
    assert list(m) == [*COCO_METRIC_NAMES, "per_class"]
    assert all(type(m[k]) is float and 0.0 <= m[k] <= 1.0 for k in COCO_METRIC_NAMES)
    assert 0.05 < m["AP"] < 0.95  # a non-trivial set: every area range populated, errors present
    json.dumps(m, allow_nan=False)


def test_per_class_equals_direct_computation_from_cocoeval(synthetic_gt_dt):
    gt, results = synthetic_gt_dt
    coco = load_coco_gt(gt)
    m = evaluate_coco(coco, results)

    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(coco, coco.loadRes([dict(r) for r in results]), iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    precision = coco_eval.eval["precision"]  # (T, R, K, A, M)
    names = {1: "cat", 4: "dog", 9: "bird"}
    expected = {}
    for k, cat_id in enumerate(coco_eval.params.catIds):
        p = precision[:, :, k, 0, 2]  # area "all", maxDets 100
        expected[names[cat_id]] = float(p[p > -1].mean())
    assert m["per_class"] == pytest.approx(expected, abs=1e-12)
    # And the 12 numbers are pycocotools' own.
    assert [m[k] for k in COCO_METRIC_NAMES] == pytest.approx(list(coco_eval.stats), abs=1e-12)
    # The mean of the per-class APs is the overall AP here (every class has ground truth).
    assert np.mean(list(m["per_class"].values())) == pytest.approx(m["AP"], abs=1e-12)


def test_path_input_and_no_mutation(tmp_path, two_box_gt):
    results = [det(1, 1, G1, 0.9), det(1, 1, FAR, 0.85), det(1, 1, G2, 0.8)]
    snapshot = json.loads(json.dumps(results))
    path = tmp_path / "dt.json"
    path.write_text(json.dumps(results))
    assert evaluate_coco(two_box_gt, str(path)) == evaluate_coco(two_box_gt, results)
    assert evaluate_coco(two_box_gt, path)["AP"] == pytest.approx(253 / 303, abs=1e-12)
    assert results == snapshot  # pycocotools' loadRes adds keys: it must get copies


def test_image_subset(gt_builder):
    # Image 2's GT is never detected; over image 1 alone the detections are perfect.
    coco = load_coco_gt(gt_builder([(1, 1, G1), (2, 1, G2)], images=(1, 2)))
    results = [det(1, 1, G1, 0.9)]
    assert evaluate_coco(coco, results, image_ids=[1])["AP"] == pytest.approx(1.0, abs=1e-12)
    # Over both: rc = [.5], pr = [1] -> 51 of the 101 recall points -> 51/101.
    assert evaluate_coco(coco, results)["AP"] == pytest.approx(51 / 101, abs=1e-12)
    with pytest.raises(EvaluationError, match="not in the ground truth"):
        evaluate_coco(coco, results, image_ids=[1, 5])


def test_quiet_and_summary(capsys, two_box_gt):
    results = [det(1, 1, G1, 0.9)]
    evaluate_coco(two_box_gt, results)
    assert capsys.readouterr().out == ""
    evaluate_coco(two_box_gt, results, print_summary=True)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 12 and all("Average" in line for line in out)
    evaluate_coco(two_box_gt, results, quiet=False)
    assert "Accumulating evaluation results" in capsys.readouterr().out


def test_unknown_backend(two_box_gt):
    with pytest.raises(EvaluationError, match="unknown evaluation backend"):
        evaluate_coco(two_box_gt, [], backend="nope")


def test_faster_coco_eval_gives_the_same_numbers(synthetic_gt_dt, capsys):
    pytest.importorskip("faster_coco_eval")
    gt, results = synthetic_gt_dt
    reference = evaluate_coco(load_coco_gt(gt), results)
    fast = evaluate_coco(load_coco_gt(gt), results, backend="faster_coco_eval")
    assert capsys.readouterr().out == ""
    for key in COCO_METRIC_NAMES:
        assert math.isclose(fast[key], reference[key], rel_tol=0, abs_tol=1e-6), key
    assert fast["per_class"] == pytest.approx(reference["per_class"], abs=1e-6)
    # The degenerate cases too: empty results and a restricted image set.
    empty_ref, empty_fast = (evaluate_coco(load_coco_gt(gt), [], backend=b)
                             for b in ("pycocotools", "faster_coco_eval"))
    assert empty_fast == empty_ref
    some = [r for r in results if r["image_id"] <= 10]
    sub_ref, sub_fast = (evaluate_coco(load_coco_gt(gt), some, image_ids=range(1, 11), backend=b)
                         for b in ("pycocotools", "faster_coco_eval"))
    assert [sub_fast[k] for k in COCO_METRIC_NAMES] == pytest.approx([sub_ref[k] for k in COCO_METRIC_NAMES], abs=1e-6)


def test_duplicate_class_names_stay_apart(gt_builder):
    coco = load_coco_gt(gt_builder([(1, 1, G1), (1, 2, G2)], categories=[(1, "x"), (2, "x")]))
    m = evaluate_coco(coco, [det(1, 1, G1, 0.9)])
    assert m["per_class"] == {"x (id 1)": pytest.approx(1.0), "x (id 2)": 0.0}
