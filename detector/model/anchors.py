"""Anchor generation for the FPN levels P3-P7.

Shape symbols: A anchors per location (scales x ratios), Hi x Wi the size of level i,
R = sum_i Hi * Wi * A anchors in all.

Anchor order is level, then position (y, x), then anchor, where the A anchors of a location are
ordered ratio-major (all scales of ratio 0, then of ratio 1, ...). This is the order in which the
head flattens its outputs, and the order torchvision uses.

An anchor of size s and aspect ratio r (= height / width) has width s / sqrt(r) and height
s * sqrt(r): its area is s^2 whatever r is. Anchors are centred on the top-left corner of their
cell (offset 0, as in torchvision and detectron2's default).

A level's stride is the padded image size divided by its feature size (integer division), which
is torchvision's rule; for a batch padded to a multiple of the largest stride it equals the
nominal stride 2^level.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .preprocess import tracing


class AnchorGenerator(nn.Module):
    """One set of anchors for a padded batch.

    Args:
        sizes: base anchor size of each level, e.g. (32, 64, 128, 256, 512) for P3-P7.
        scales: multipliers of the base size, e.g. (2^0, 2^(1/3), 2^(2/3)).
        ratios: aspect ratios height / width, e.g. (0.5, 1, 2).
        torchvision_rounding: reproduce torchvision's RetinaNet anchors exactly: sizes
            truncated to integers (int(32 * 2^(1/3)) = 40) and corner offsets rounded to whole
            pixels. Off by default; used by checkpoints imported from torchvision.
    """

    def __init__(
        self,
        sizes: Sequence[float] = (32, 64, 128, 256, 512),
        scales: Sequence[float] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3)),
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
        torchvision_rounding: bool = False,
    ) -> None:
        super().__init__()
        if not sizes or not scales or not ratios:
            raise ValueError("anchor sizes, scales and ratios must all be non-empty")
        if min(sizes) <= 0 or min(scales) <= 0 or min(ratios) <= 0:
            raise ValueError(f"anchor sizes, scales and ratios must be positive: {sizes}, {scales}, {ratios}")
        self.sizes = tuple(float(s) for s in sizes)
        self.scales = tuple(float(s) for s in scales)
        self.ratios = tuple(float(r) for r in ratios)
        self.torchvision_rounding = torchvision_rounding
        self._cache: dict[tuple, Tensor] = {}

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.scales) * len(self.ratios)

    @property
    def num_levels(self) -> int:
        return len(self.sizes)

    def cell_anchors(self, level: int) -> Tensor:
        """(A, 4) anchors centred on (0, 0) for one level, ratio-major order."""
        base = self.sizes[level]
        sizes = torch.tensor([base * s for s in self.scales], dtype=torch.float64)
        if self.torchvision_rounding:
            sizes = sizes.floor()
        h_ratios = torch.sqrt(torch.tensor(self.ratios, dtype=torch.float64))
        w_ratios = 1.0 / h_ratios
        ws = (w_ratios[:, None] * sizes[None, :]).reshape(-1)  # (A,)
        hs = (h_ratios[:, None] * sizes[None, :]).reshape(-1)  # (A,)
        anchors = torch.stack([-ws, -hs, ws, hs], dim=1).float() / 2
        return anchors.round() if self.torchvision_rounding else anchors

    def forward(self, image_size: Sequence[int], feature_sizes: Sequence[Sequence[int]], device=None) -> Tensor:
        """Anchors (R, 4) XYXY float32 for a batch padded to `image_size` (H, W).

        Args:
            image_size: (H, W) of the padded batch.
            feature_sizes: (Hi, Wi) of each level, in level order.
        """
        if len(feature_sizes) != self.num_levels:
            raise ValueError(f"{len(feature_sizes)} feature levels but {self.num_levels} anchor sizes")
        if tracing():  # sizes are symbolic: no cache keyed by them
            return torch.cat([self.grid_anchors(level, image_size, fs, device) for level, fs in enumerate(feature_sizes)])
        key = (tuple(image_size), tuple(tuple(f) for f in feature_sizes), str(device))
        cached = self._cache.get(key)
        if cached is None:
            cached = torch.cat(
                [self.grid_anchors(level, image_size, fs) for level, fs in enumerate(feature_sizes)]
            ).to(device)
            if len(self._cache) > 16:  # multi-scale training sees a handful of sizes; stay bounded
                self._cache.clear()
            self._cache[key] = cached
        return cached

    def num_anchors_per_level(self, feature_sizes: Sequence[Sequence[int]]) -> list[int]:
        return [h * w * self.num_anchors_per_location for h, w in feature_sizes]

    def grid_anchors(self, level: int, image_size: Sequence, feature_size: Sequence, device=None) -> Tensor:
        """Anchors (Hi * Wi * A, 4) of one level; sizes are ints, SymInts or 0-dim tensors (`preprocess.dims`)."""
        (img_h, img_w), (h, w) = image_size, feature_size
        stride_y, stride_x = img_h // h, img_w // w
        ys = torch.arange(h, dtype=torch.float32, device=device) * stride_y
        xs = torch.arange(w, dtype=torch.float32, device=device) * stride_x
        shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=-1).reshape(-1, 1, 4)  # (Hi*Wi, 1, 4)
        return (shifts + self.cell_anchors(level).to(device)[None]).reshape(-1, 4)  # (Hi*Wi*A, 4)

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, scales={tuple(round(s, 4) for s in self.scales)}, ratios={self.ratios}"

