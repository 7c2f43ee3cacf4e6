"""CocoDetectionAccumulator: each image once, only the images seen, mergeable picklable state."""

from __future__ import annotations

import pickle

import pytest
import torch

from detector.evaluation import CocoDetectionAccumulator, EvaluationError, evaluate_coco, load_coco_gt

LABEL_TO_CAT = [1]  # one class, category id 1

# Image i has one GT box; the detections on image 1 are perfect, image 2 has a TP and a
# higher-scored FP, image 3 finds nothing, image 4 is never given to the accumulator.
GT_BOXES = {1: [0, 0, 50, 50], 2: [100, 100, 60, 40], 3: [10, 10, 80, 80], 4: [0, 0, 30, 30]}


def detection(image_id):
    boxes = {
        1: [[0.0, 0.0, 50.0, 50.0]],
        2: [[300.0, 300.0, 350.0, 350.0], [100.0, 100.0, 160.0, 140.0]],
        3: [],
    }[image_id]
    scores = {1: [0.9], 2: [0.95, 0.6], 3: []}[image_id]
    return {"boxes": torch.tensor(boxes).reshape(-1, 4), "scores": torch.tensor(scores),
            "labels": torch.zeros(len(scores), dtype=torch.int64)}


@pytest.fixture
def coco_gt(gt_builder):
    return load_coco_gt(gt_builder([(i, 1, b) for i, b in GT_BOXES.items()], images=(1, 2, 3, 4)))


def reference(coco_gt, image_ids):
    """evaluate_coco on the unique images, built directly (not through the accumulator)."""
    results = []
    for i in image_ids:
        d = detection(i)
        for (x1, y1, x2, y2), s in zip(d["boxes"].tolist(), d["scores"].tolist()):
            results.append({"image_id": i, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
    return evaluate_coco(coco_gt, results, image_ids=image_ids)


def test_repeated_images_count_once(coco_gt):
    acc = CocoDetectionAccumulator()
    acc.update([1, 2], [detection(1), detection(2)])
    acc.update(torch.tensor([2, 3, 1]), [detection(2), detection(3), detection(1)])  # sampler padding
    assert len(acc) == 3 and acc.image_ids == [1, 2, 3]
    assert len(acc.results(LABEL_TO_CAT)) == 3  # 1 + 2 + 0 detections, not 6
    m = acc.compute(coco_gt, LABEL_TO_CAT)
    assert m == reference(coco_gt, [1, 2, 3])
    # By hand over images 1-3 (3 GT): FP 0.95, TP 0.9, TP 0.6 at every IoU threshold;
    # rc = [0, 1/3, 2/3], pr = [0, 1/2, 2/3] -> [2/3, 2/3, 2/3]; recall points 0..0.66 (67)
    # give 2/3, 0.67..1 (34) are past the last detection -> 0. AP = 67 * (2/3) / 101.
    assert m["AP"] == pytest.approx(67 * (2 / 3) / 101, abs=1e-12)


def test_only_images_seen_are_evaluated(coco_gt):
    # Image 4's GT would be a miss if the whole ground truth were evaluated.
    acc = CocoDetectionAccumulator()
    acc.update([1, 2, 3], [detection(1), detection(2), detection(3)])
    assert acc.compute(coco_gt, LABEL_TO_CAT)["AR100"] == pytest.approx(2 / 3, abs=1e-12)
    full = evaluate_coco(coco_gt, acc.results(LABEL_TO_CAT))
    assert full["AR100"] == pytest.approx(2 / 4, abs=1e-12)


def test_state_merge_across_processes(coco_gt):
    # Two "ranks" of a DistributedSampler over 3 images padded to 4: rank 1 repeats image 1.
    rank0, rank1 = CocoDetectionAccumulator(), CocoDetectionAccumulator()
    rank0.update([1, 3], [detection(1), detection(3)])
    rank1.update([2, 1], [detection(2), detection(1)])
    gathered = [pickle.loads(pickle.dumps(a.state())) for a in (rank0, rank1)]  # as all_gather_object would
    rank0.merge(gathered)  # its own state included: no double counting
    assert rank0.image_ids == [1, 2, 3]
    assert rank0.compute(coco_gt, LABEL_TO_CAT) == reference(coco_gt, [1, 2, 3])


def test_reset_and_empty(coco_gt):
    acc = CocoDetectionAccumulator()
    with pytest.raises(EvaluationError, match="no images were accumulated"):
        acc.compute(coco_gt, LABEL_TO_CAT)
    acc.update([3], [detection(3)])  # an image without detections still counts
    assert acc.compute(coco_gt, LABEL_TO_CAT)["AP"] == 0.0
    acc.reset()
    assert len(acc) == 0
    with pytest.raises(EvaluationError, match="2 detection dicts but 1 image ids"):
        acc.update([1], [detection(1), detection(2)])


def test_unknown_image_id(coco_gt):
    acc = CocoDetectionAccumulator()
    acc.update([1, 9], [detection(1), detection(3)])
    with pytest.raises(EvaluationError, match="not in the ground truth"):
        acc.compute(coco_gt, LABEL_TO_CAT)
