"""The report's numbers against references: pycocotools' precision array, mmdetection's confusion
rule and TIDE's error rules on hand-built cases, hand-computed best-F1 and AP gains, tidecv."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detector.evaluation.coco import load_coco_gt, run_coco_eval, validate_results
from detector.evaluation.confusion import confusion_matrix, row_normalised
from detector.evaluation.curves import class_matches, class_table, pr_curves, score_curves
from detector.evaluation.html_report import build_report
from detector.evaluation.tide import ERROR_TYPES, tide_errors



def det(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": list(bbox), "score": score}


def reference_cocoeval(gt: dict, results: list) -> COCOeval:
    """pycocotools alone, as its README runs it."""
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), iouType="bbox")
    ev.evaluate()
    ev.accumulate()
    return ev


def test_pr_curves_are_pycocotools_precision(synthetic_gt_dt):
    gt, results = synthetic_gt_dt
    ours = pr_curves(run_coco_eval(load_coco_gt(copy.deepcopy(gt)), results))
    ref = reference_cocoeval(gt, results)
    precision = ref.eval["precision"]  # (T, R, K, A, M)
    assert ours["recall"] == pytest.approx(ref.params.recThrs.tolist())
    for k in range(len(ref.params.catIds)):
        np.testing.assert_array_equal(ours["iou50"][k], precision[0, :, k, 0, 2])
        np.testing.assert_allclose(ours["iou50_95"][k], precision[:, :, k, 0, 2].mean(axis=0), rtol=0, atol=1e-12)


def test_class_table_against_pycocotools(synthetic_gt_dt):
    gt, results = synthetic_gt_dt
    ev = run_coco_eval(load_coco_gt(copy.deepcopy(gt)), results)
    rows = class_table(ev, class_matches(ev), ["cat", "dog", "bird"])
    ref = reference_cocoeval(gt, results)
    for k, (row, cat_id) in enumerate(zip(rows, ref.params.catIds)):
        assert row["AP"] == pytest.approx(ref.eval["precision"][:, :, k, 0, 2].mean())
        assert row["AP50"] == pytest.approx(ref.eval["precision"][0, :, k, 0, 2].mean())
        assert row["AP75"] == pytest.approx(ref.eval["precision"][5, :, k, 0, 2].mean())
        assert row["recall100"] == pytest.approx(ref.eval["recall"][:, k, 0, 2].mean())
        anns = [a for a in gt["annotations"] if a["category_id"] == cat_id and not a["iscrowd"]]
        assert row["instances"] == len(anns)
        assert row["images"] == len({a["image_id"] for a in anns})


# One class, two boxes; detections TP 0.9, FP 0.8, TP 0.7, FP 0.6. By hand, score >= t:
# t=0.9 P 1 R .5 F1 .667; t=0.8 P .5 R .5 F1 .5; t=0.7 P .667 R 1 F1 .8; t=0.6 P .5 R 1 F1 .667.
BOX_A, BOX_B, FAR = [0, 0, 100, 100], [200, 0, 100, 100], [400, 300, 100, 100]


def test_best_f1_threshold_by_hand(gt_builder):
    gt = gt_builder([(1, 1, BOX_A), (1, 1, BOX_B)])
    dets = [det(1, 1, BOX_A, 0.9), det(1, 1, FAR, 0.8), det(1, 1, BOX_B, 0.7), det(1, 1, [400, 0, 50, 50], 0.6)]
    data, _, _ = build_report(load_coco_gt(gt), dets)
    best = data["best_f1"]["per_class"]["thing"]
    assert best["threshold"] == pytest.approx(0.7)
    assert (best["precision"], best["recall"], best["f1"]) == pytest.approx((2 / 3, 1.0, 0.8))
    curve = data["score_curves"]["per_class"]["thing"]
    thresholds = data["score_curves"]["thresholds"]
    at = {round(t, 2): i for i, t in enumerate(thresholds)}
    assert curve["precision"][at[0.85]] == pytest.approx(1.0) and curve["recall"][at[0.85]] == pytest.approx(0.5)
    assert curve["f1"][at[0.75]] == pytest.approx(0.5)
    assert curve["f1"][at[0.65]] == pytest.approx(0.8)
    assert curve["f1"][at[0.5]] == pytest.approx(2 / 3)
    assert curve["precision"][at[0.95]] is None  # no detection passes
    assert data["confusion_matrix"]["score_threshold"] == pytest.approx(0.7)  # the default


def test_pooled_best_f1_by_hand(gt_builder):
    # class 1: TP 0.9; class 2: FP 0.8, TP 0.3 (one box each). Pooled, score >= t:
    # 0.9: P 1 R .5 F1 .667; 0.8: P .5 R .5 F1 .5; 0.3: P .667 R 1 F1 .8 -> best 0.3
    gt = gt_builder([(1, 1, BOX_A), (1, 2, BOX_B)], categories=((1, "a"), (2, "b")))
    dets = [det(1, 1, BOX_A, 0.9), det(1, 2, FAR, 0.8), det(1, 2, BOX_B, 0.3)]
    data, _, _ = build_report(load_coco_gt(gt), dets)
    overall = data["best_f1"]["overall"]
    assert overall["threshold"] == pytest.approx(0.3) and overall["f1"] == pytest.approx(0.8)
    assert data["best_f1"]["per_class"]["a"]["threshold"] == pytest.approx(0.9)
    assert data["best_f1"]["per_class"]["b"]["f1"] == pytest.approx(2 / 3)  # P .5 R 1 at 0.3


def test_confusion_matrix_by_hand(gt_builder):
    # classes A (1), B (2); rows ground truth A, B, background; columns detected A, B, background
    g1, g2, g3 = [0, 0, 100, 100], [200, 0, 100, 100], [0, 200, 100, 100]
    gt = gt_builder([(1, 1, g1), (1, 2, g2), (1, 1, g3), (1, 1, [500, 300, 50, 50], 1)],
                 categories=((1, "A"), (2, "B")))
    dets = [
        det(1, 1, g1, 0.9),  # A on A: [A, A]
        det(1, 2, g1, 0.8),  # B on A: [A, B]
        det(1, 1, [400, 200, 50, 50], 0.7),  # A on nothing: [bg, A]
        det(1, 2, g2, 0.6),  # B on B: [B, B]
        det(1, 1, g3, 0.2),  # below the threshold: not counted, so g3 is missed: [A, bg]
        det(1, 2, [500, 300, 50, 50], 0.9),  # on the crowd box only: crowd boxes are left out -> [bg, B]
    ]
    coco = load_coco_gt(gt)
    counts = confusion_matrix(coco, validate_results(dets, coco), [1], [1, 2], score_threshold=0.5)
    np.testing.assert_array_equal(counts, [[1, 1, 1], [0, 1, 0], [1, 1, 0]])
    np.testing.assert_allclose(row_normalised(counts), [[1 / 3, 1 / 3, 1 / 3], [0, 1, 0], [0.5, 0.5, 0]])


def test_confusion_matrix_counts_a_detection_once_per_box_it_overlaps(gt_builder):
    # mmdetection's rule: a detection overlapping two boxes (IoU >= 0.5 with each) adds to both cells
    gt = gt_builder([(1, 1, [0, 0, 100, 100]), (1, 2, [0, 0, 100, 90])], categories=((1, "A"), (2, "B")))
    coco = load_coco_gt(gt)
    counts = confusion_matrix(coco, validate_results([det(1, 1, [0, 0, 100, 95], 0.9)], coco), [1], [1, 2],
                              score_threshold=0.5)
    np.testing.assert_array_equal(counts, [[1, 0, 0], [1, 0, 1], [0, 0, 0]])


def one_error_of_each_kind(make_gt):
    """Classes A (1), B (2); one TP and one detection (or box) of each TIDE error type."""
    g1, g2, g3, g4 = [0, 0, 100, 100], [200, 0, 100, 100], [0, 200, 100, 100], [400, 0, 50, 50]
    gt = make_gt([(1, 1, g1), (1, 1, g2), (1, 1, g3), (1, 1, g4)], categories=((1, "A"), (2, "B")))
    dets = [
        det(1, 1, g1, 0.9),  # true positive
        det(1, 1, g1, 0.8),  # duplicate: g1 already taken
        det(1, 2, g2, 0.7),  # classification: IoU 1 with an A box
        det(1, 1, [0, 250, 100, 100], 0.6),  # localisation: IoU 1/3 with g3
        det(1, 2, [0, 250, 100, 100], 0.5),  # both: wrong class, IoU 1/3
        det(1, 1, [400, 300, 50, 50], 0.4),  # background: IoU 0 with everything
    ]  # g4: missed
    return gt, dets


def test_each_error_type_counted_once_on_a_hand_built_case(gt_builder):
    gt, dets = one_error_of_each_kind(gt_builder)
    coco = load_coco_gt(gt)
    result = tide_errors(coco, validate_results(dets, coco), [1], [1, 2])
    assert result.counts == {t: 1 for t in ERROR_TYPES}
    by_type = {e.type: e for e in result.errors}
    assert [by_type[t].det for t in ("dupe", "cls", "loc", "both", "bkg")] == [1, 2, 3, 4, 5]
    assert by_type["miss"].gt_id == 4 and by_type["cls"].gt_id == 2 and by_type["loc"].gt_id == 3
    assert result.true_positives == {1: [0]}


def test_ap_gained_by_fixing_an_error_type_by_hand(gt_builder):
    # One class, boxes g1, g2. Detections: background FP 0.95, TP 0.9 on g1; g2 missed.
    # TIDE's AP (101 recall points x/100, precision made monotone, searchsorted left):
    # points FP (P 0, R 0), TP (P .5, R .5) -> precision .5 for x <= .5: AP = 51 * .5 / 101.
    # Fix bkg: TP alone, P 1 for x <= .5: AP = 51 / 101, a gain of 25.5 / 101.
    # Fix miss: one box, TP at R 1 with P .5: AP = .5, a gain of .5 - 25.5 / 101 = 25 / 101.
    gt = gt_builder([(1, 1, BOX_A), (1, 1, BOX_B)])
    dets = [det(1, 1, FAR, 0.95), det(1, 1, BOX_A, 0.9)]
    coco = load_coco_gt(gt)
    result = tide_errors(coco, validate_results(dets, coco), [1], [1])
    assert result.ap == pytest.approx(25.5 / 101)
    assert result.delta_ap["bkg"] == pytest.approx(25.5 / 101)
    assert result.delta_ap["miss"] == pytest.approx(25 / 101)
    assert result.delta_ap["cls"] == result.delta_ap["loc"] == result.delta_ap["dupe"] == 0.0


def test_fixing_a_localisation_error_makes_it_a_true_positive(gt_builder):
    # the only detection overlaps the only box at IoU 1/3: AP 0; fixed, AP 1
    gt = gt_builder([(1, 1, [0, 200, 100, 100])])
    coco = load_coco_gt(gt)
    result = tide_errors(coco, validate_results([det(1, 1, [0, 250, 100, 100], 0.6)], coco), [1], [1])
    assert result.counts["loc"] == 1 and result.counts["miss"] == 0
    assert result.ap == 0.0 and result.delta_ap["loc"] == pytest.approx(1.0)


def _tidecv_run(gt, results):
    tidecv = pytest.importorskip("tidecv", reason="tidecv not installed: pip install tidecv")
    g, p = tidecv.Data("gt"), tidecv.Data("dt")
    for im in gt["images"]:
        g.add_image(im["id"], im["file_name"])
    for a in gt["annotations"]:
        (g.add_ignore_region if a["iscrowd"] else g.add_ground_truth)(a["image_id"], a["category_id"], a["bbox"])
    for r in results:
        p.add_detection(r["image_id"], r["category_id"], r["score"], r["bbox"])
    tide = tidecv.TIDE()
    run = tide.evaluate(g, p, name="dt")
    counts = {e.short_name: n for e, n in run.count_errors().items()}
    return run.ap / 100, counts, {k: v / 100 for k, v in tide.get_main_errors()["dt"].items()}


SHORT = {"cls": "Cls", "loc": "Loc", "both": "Both", "dupe": "Dupe", "bkg": "Bkg", "miss": "Miss"}


@pytest.mark.parametrize("case", ["hand_built", "random"])
def test_tide_against_tidecv(case, synthetic_gt_dt, gt_builder):
    gt, results = one_error_of_each_kind(gt_builder) if case == "hand_built" else synthetic_gt_dt
    ref_ap, ref_counts, ref_delta = _tidecv_run(gt, results)
    coco = load_coco_gt(copy.deepcopy(gt))
    ours = tide_errors(coco, validate_results(results, coco), sorted(coco.imgs), sorted(coco.cats))
    assert ours.ap == pytest.approx(ref_ap, abs=1e-12)
    assert {SHORT[t]: n for t, n in ours.counts.items()} == ref_counts
    assert {SHORT[t]: v for t, v in ours.delta_ap.items()} == pytest.approx(ref_delta, abs=1e-12)


def test_score_curves_without_detections_have_no_best_threshold(gt_builder):
    gt = gt_builder([(1, 1, BOX_A)])
    data, tide, _ = build_report(load_coco_gt(gt), [])
    assert data["best_f1"]["overall"] is None
    assert data["score_curves"]["overall"]["f1"][0] == 0.0  # nothing detected: F1 0
    assert tide.counts["miss"] == 1
    assert data["confusion_matrix"]["counts"] == [[0, 1], [0, 0]]


def test_score_curves_pool_every_class(gt_builder):
    ev_gt = gt_builder([(1, 1, BOX_A), (1, 2, BOX_B)], categories=((1, "a"), (2, "b")))
    coco = load_coco_gt(ev_gt)
    ev = run_coco_eval(coco, [det(1, 1, BOX_A, 0.9), det(1, 2, FAR, 0.8)])
    curves = score_curves(class_matches(ev), ["a", "b"])
    i = curves["thresholds"].index(0.5)
    assert curves["overall"]["precision"][i] == pytest.approx(0.5) and curves["overall"]["recall"][i] == pytest.approx(0.5)
    assert curves["per_class"]["b"]["precision"][i] == 0.0 and curves["per_class"]["a"]["recall"][i] == 1.0
