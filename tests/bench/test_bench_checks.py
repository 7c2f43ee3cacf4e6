"""The checks inside the benchmark that decide 'met': detection equality and linearity of memory."""

import torch

from detector.bench.cases import _same_detections
from detector.bench.memory import linear_fit


def _dets(scores, labels, boxes):
    return {"scores": torch.tensor(scores), "labels": torch.tensor(labels), "boxes": torch.tensor(boxes)}


def test_same_detections_ignores_the_order_of_equal_scores_only():
    a = _dets([0.9, 0.5, 0.5], [1, 2, 3], [[0.0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]])
    tie_swapped = _dets([0.9, 0.5, 0.5], [1, 3, 2], [[0.0, 0, 1, 1], [2, 2, 3, 3], [1, 1, 2, 2]])
    assert _same_detections([a], [tie_swapped])
    other_label = _dets([0.9, 0.5, 0.5], [1, 2, 4], [[0.0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]])
    assert not _same_detections([a], [other_label])
    moved = _dets([0.9, 0.5, 0.5], [1, 2, 3], [[0.0, 0, 1, 1], [1, 1, 2, 2.01], [2, 2, 3, 3]])
    assert not _same_detections([a], [moved])
    fewer = _dets([0.9, 0.5], [1, 2], [[0.0, 0, 1, 1], [1, 1, 2, 2]])
    assert not _same_detections([a], [fewer])


def test_linear_fit_by_hand():
    fit = linear_fit([0, 100, 1000], [100.0, 110.0, 200.0])  # exactly 100 + 0.1 x
    assert abs(fit["mib_per_box"] - 0.1) < 1e-9 and abs(fit["intercept_mib"] - 100) < 1e-6 and fit["linear"]
    quadratic = linear_fit([0, 100, 200, 1000], [0.0, 100.0, 400.0, 10000.0])  # x^2 / 100
    assert not quadratic["linear"]
    flat_noisy = [345.4, 391.2, 374.9]  # flat, with allocator noise of the size RSS points have on a CPU
    assert not linear_fit([10, 100, 1000], flat_noisy)["linear"]
    assert linear_fit([10, 100, 1000], flat_noisy, noise_mib=32)["linear"]
