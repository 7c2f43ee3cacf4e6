"""collate_detection: padding to the stride, target padding and the validity mask."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from detector.data import PAD_LABEL, DetectionCollator, collate_detection


def _item(h, w, boxes, labels, image_id, orig=(10, 20), fill=7):
    return {
        "image": np.full((h, w, 3), fill, np.uint8),
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "labels": np.asarray(labels, np.int64),
        "image_id": image_id,
        "orig_size": orig,
    }


def test_padding_shapes_and_mask():
    rng = np.random.default_rng(0)
    first = _item(100, 150, [[1, 2, 3, 4], [5, 6, 7, 8]], [3, 0], 11, orig=(200, 300))
    first["image"] = rng.integers(0, 256, (100, 150, 3), dtype=np.uint8)
    second = _item(130, 90, [], [], 12, orig=(260, 180))
    third = _item(20, 20, [[0, 0, 5, 5]], [4], 13)
    batch = collate_detection([first, second, third])

    assert batch["images"].shape == (3, 3, 256, 256) and batch["images"].dtype == torch.uint8
    torch.testing.assert_close(batch["images"][0, :, :100, :150], torch.from_numpy(first["image"]).permute(2, 0, 1))
    assert batch["images"][0, :, 100:].sum() == 0 and batch["images"][0, :, :, 150:].sum() == 0
    assert (batch["images"][1, :, :130, :90] == 7).all() and batch["images"][1, :, 130:].sum() == 0
    assert batch["image_sizes"].tolist() == [[100, 150], [130, 90], [20, 20]]
    assert batch["orig_sizes"].tolist() == [[200, 300], [260, 180], [10, 20]]
    assert batch["image_sizes"].dtype == batch["orig_sizes"].dtype == torch.int64
    assert batch["boxes"].shape == (3, 2, 4) and batch["boxes"].dtype == torch.float32
    assert batch["boxes"][0].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert batch["labels"].tolist() == [[3, 0], [PAD_LABEL, PAD_LABEL], [4, PAD_LABEL]]
    assert batch["labels"].dtype == torch.int64
    assert batch["valid"].tolist() == [[True, True], [False, False], [True, False]]
    assert batch["boxes"][~batch["valid"]].abs().sum() == 0
    assert batch["image_ids"].tolist() == [11, 12, 13] and batch["image_ids"].dtype == torch.int64


def test_all_empty_batch_and_other_divisor():
    batch = collate_detection([_item(33, 64, [], [], 1), _item(10, 65, [], [], 2)], size_divisible=32)
    assert batch["images"].shape == (2, 3, 64, 96)
    assert batch["boxes"].shape == (2, 0, 4) and batch["labels"].shape == (2, 0) and batch["valid"].shape == (2, 0)


def test_collator_is_picklable_for_workers():
    collator = pickle.loads(pickle.dumps(DetectionCollator(64)))
    assert collator([_item(65, 10, [], [], 1)])["images"].shape == (1, 3, 128, 64)
    with pytest.raises(ValueError):
        collate_detection([])
