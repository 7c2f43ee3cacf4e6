"""Batching dataset items into padded tensors.

Shape symbols: N images in the batch, H x W the padded batch size, Mmax the largest number of
boxes of one image in the batch (may be 0).

The batch is a dict of tensors:
    "images":      (N, 3, H, W) uint8, zero-padded at the bottom and right; H and W are
                   multiples of `size_divisible` (default 128, the stride of P7)
    "image_sizes": (N, 2) int64, (h, w) of each transformed image before padding
    "orig_sizes":  (N, 2) int64, (h, w) of each original image
    "boxes":       (N, Mmax, 4) float32 XYXY pixels of the transformed image; padding rows 0
    "labels":      (N, Mmax) int64; padding rows `PAD_LABEL`
    "valid":       (N, Mmax) bool, True for real boxes
    "image_ids":   (N,) int64
    "skipped_images": only when an item stood in for unreadable images: their paths (list[str])

Padding targets to Mmax lets the matcher label the whole batch at once (as effdet does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

PAD_LABEL = -1  # label of the padding rows of "labels"; "valid" is the mask to use


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def collate_detection(items: Sequence[dict[str, Any]], size_divisible: int = 128) -> dict[str, Tensor]:
    """Pad a list of dataset items into one batch (see the module doc for the layout)."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    if size_divisible < 1:
        raise ValueError(f"size_divisible must be >= 1, got {size_divisible}")
    n = len(items)
    image_sizes = torch.tensor([item["image"].shape[:2] for item in items], dtype=torch.int64)  # (N, 2)
    orig_sizes = torch.tensor([tuple(item["orig_size"]) for item in items], dtype=torch.int64)  # (N, 2)
    counts = torch.tensor([len(item["labels"]) for item in items], dtype=torch.int64)  # (N,)
    height = _round_up(int(image_sizes[:, 0].max()), size_divisible)
    width = _round_up(int(image_sizes[:, 1].max()), size_divisible)
    m_max = int(counts.max())

    images = torch.zeros((n, 3, height, width), dtype=torch.uint8)
    boxes = torch.zeros((n, m_max, 4), dtype=torch.float32)
    labels = torch.full((n, m_max), PAD_LABEL, dtype=torch.int64)
    for i, item in enumerate(items):
        h, w = item["image"].shape[:2]
        images[i, :, :h, :w] = torch.from_numpy(np.ascontiguousarray(item["image"])).permute(2, 0, 1)
        m = int(counts[i])
        boxes[i, :m] = torch.from_numpy(np.asarray(item["boxes"], dtype=np.float32).reshape(m, 4))
        labels[i, :m] = torch.from_numpy(np.asarray(item["labels"], dtype=np.int64).reshape(m))
    valid = torch.arange(m_max)[None, :] < counts[:, None]  # (N, Mmax)
    skipped = [path for item in items for path in item.get("skipped", ())]
    return {
        "images": images,
        "image_sizes": image_sizes,
        "orig_sizes": orig_sizes,
        "boxes": boxes,
        "labels": labels,
        "valid": valid,
        "image_ids": torch.tensor([int(item["image_id"]) for item in items], dtype=torch.int64),
        **({"skipped_images": skipped} if skipped else {}),
    }


class DetectionCollator:
    """Picklable `collate_fn` for DataLoader workers: `collate_detection` with a fixed divisor."""

    def __init__(self, size_divisible: int = 128) -> None:
        self.size_divisible = size_divisible

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        return collate_detection(items, self.size_divisible)

    def __repr__(self) -> str:
        return f"DetectionCollator(size_divisible={self.size_divisible})"
