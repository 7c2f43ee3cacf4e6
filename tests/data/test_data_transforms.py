"""Albumentations pipelines: boxes stay on their objects, resize rule, clipping and dropping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detector.data import build_transforms
from torchvision.models.detection.transform import GeneralizedRCNNTransform

# Filled rectangles of distinct colours on grey, (x0, y0, x1, y1) in pixels of a 120 x 200 image.
RECTS = np.array([[10, 10, 50, 40], [60, 70, 140, 110], [150, 5, 195, 60], [0, 90, 30, 120]], dtype=np.float32)
COLORS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.float64)


def _scene() -> np.ndarray:
    image = np.full((120, 200, 3), 128, np.uint8)
    for (x0, y0, x1, y1), color in zip(RECTS.astype(int), COLORS):
        image[y0:y1, x0:x1] = color
    return image


def _mean_inside(image: np.ndarray, box: np.ndarray, margin: float = 1.5) -> np.ndarray:
    x0, y0 = (int(np.ceil(v + margin)) for v in box[:2])
    x1, y1 = (int(np.floor(v - margin)) for v in box[2:])
    patch = image[y0:y1, x0:x1]
    return patch.reshape(-1, 3).mean(axis=0)


def test_boxes_stay_on_their_objects_through_the_train_pipeline():
    transform = build_transforms(True, [96, 160, 240], max_size=1000, hflip_prob=0.5, color_jitter=0.0, seed=0)
    labels = np.arange(len(RECTS))
    flips, sizes = 0, set()
    for _ in range(12):
        image, boxes, out_labels = transform(_scene(), RECTS, labels)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert boxes.dtype == np.float32 and out_labels.dtype == np.int64
        assert out_labels.tolist() == labels.tolist()
        sizes.add(image.shape[:2])
        scale = image.shape[0] / 120
        np.testing.assert_allclose(image.shape[1], 200 * scale, atol=1)
        for box, label in zip(boxes, out_labels):
            np.testing.assert_allclose(_mean_inside(image, box), COLORS[label], atol=12)
            np.testing.assert_allclose(box[2] - box[0], (RECTS[label, 2] - RECTS[label, 0]) * scale, atol=1)
        flipped = abs(boxes[0, 0] - RECTS[0, 0] * scale) > 2
        if flipped:  # mirrored: x0' = W - x1
            np.testing.assert_allclose(boxes[0, 0], image.shape[1] - RECTS[0, 2] * scale, atol=1)
        flips += flipped
    assert 0 < flips < 12  # both branches exercised
    assert len(sizes) >= 2  # scale jitter exercised


def test_seeded_pipelines_repeat():
    def run(seed):
        t = build_transforms(True, [96, 160, 240], 1000, seed=seed)
        return [t(_scene(), RECTS, np.arange(4))[1].tolist() for _ in range(5)]

    assert run(1) == run(1)


@pytest.mark.parametrize(
    ("shape", "min_size", "max_size", "expected"),
    [((100, 400), 256, 300, (75, 300)), ((300, 200), 100, 1000, (150, 100)), ((480, 640), 800, 1333, (800, 1066))],
)
def test_eval_resize_rule(shape, min_size, max_size, expected):
    h, w = shape
    reference = GeneralizedRCNNTransform(min_size, max_size, [0.0] * 3, [1.0] * 3).eval()
    assert reference([torch.zeros(3, h, w)])[0].image_sizes[0] == expected  # torchvision's own resize
    image, boxes, _ = build_transforms(False, min_size, max_size)(
        np.zeros((h, w, 3), np.uint8), np.array([[0, 0, w, h]], np.float32), np.array([0])
    )
    assert image.shape[:2] == expected
    np.testing.assert_allclose(boxes, [[0, 0, expected[1], expected[0]]], atol=1e-3)


def test_eval_with_a_list_takes_the_largest_size():
    transform = build_transforms(False, [100, 200], 1000)
    image, _, _ = transform(np.zeros((50, 50, 3), np.uint8), np.zeros((0, 4)), np.zeros(0))
    assert image.shape[:2] == (200, 200)


def test_outside_boxes_clipped_and_tiny_ones_dropped():
    transform = build_transforms(False, 50, 1000, min_box_size=1.0)  # 100 px -> 50 px
    boxes = np.array(
        [
            [-10, 5, 50, 40],  # clipped to x0 = 0
            [90, 60, 130, 80],  # clipped to x1 = 100
            [20, 20, 21.5, 30],  # 0.75 px wide once halved: dropped
            [-30, 0, -10, 10],  # entirely outside: dropped
        ],
        dtype=np.float32,
    )
    image, out, labels = transform(np.zeros((100, 100, 3), np.uint8), boxes, np.array([3, 4, 5, 6]))
    assert image.shape[:2] == (50, 50)
    assert labels.tolist() == [3, 4]
    np.testing.assert_allclose(out, [[0, 2.5, 25, 20], [45, 30, 50, 40]], atol=1e-3)


def test_empty_targets_pass_through():
    transform = build_transforms(True, 64, 64, seed=0)
    image, boxes, labels = transform(np.zeros((32, 48, 3), np.uint8), np.zeros((0, 4)), np.zeros(0))
    assert boxes.shape == (0, 4) and labels.shape == (0,)
    assert image.shape == (42, 64, 3)  # 32 * min(64 / 32, 64 / 48) = 42.67, floored as torchvision does
