"""Box coder: anchors + regression deltas <-> boxes (the R-CNN parametrisation).

Shapes: R anchors (any leading batch dims broadcast). Boxes are XYXY in absolute pixels.

    dx = wx * (gx - ax) / aw      dy = wy * (gy - ay) / ah
    dw = ww * log(gw / aw)        dh = wh * log(gh / ah)

where (ax, ay, aw, ah) are the anchor's centre and size. Decoding inverts this and clamps dw, dh
at log(1000 / 16) so that exp() cannot overflow on an untrained network. Decoding always runs
in float32, whatever the autocast dtype of the deltas.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Largest dw/dh before exp(): a box at most 1000/16 times its anchor, as in Detectron and torchvision.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def _centre_size(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * widths, boxes[..., 1] + 0.5 * heights, widths, heights


class BoxCoder:
    """Encodes ground-truth boxes as deltas from anchors and decodes deltas back to boxes.

    Args:
        weights: (wx, wy, ww, wh) that scale the deltas; RetinaNet uses (1, 1, 1, 1).
        scale_clamp: upper bound on dw and dh before exponentiation.
    """

    def __init__(
        self,
        weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
        scale_clamp: float = DEFAULT_SCALE_CLAMP,
    ) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def encode(self, anchors: Tensor, boxes: Tensor) -> Tensor:
        """Deltas (..., 4) that turn `anchors` (..., 4) into `boxes` (..., 4) (same shape)."""
        anchors = anchors.float()
        boxes = boxes.float()
        wx, wy, ww, wh = self.weights
        ax, ay, aw, ah = _centre_size(anchors)
        gx, gy, gw, gh = _centre_size(boxes)
        return torch.stack(
            (
                wx * (gx - ax) / aw,
                wy * (gy - ay) / ah,
                ww * torch.log(gw / aw),
                wh * torch.log(gh / ah),
            ),
            dim=-1,
        )

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Boxes (..., 4) XYXY float32 from `deltas` (..., 4) applied to `anchors` (..., 4)."""
        deltas = deltas.float()
        anchors = anchors.to(deltas.dtype)
        wx, wy, ww, wh = self.weights
        ax, ay, aw, ah = _centre_size(anchors)
        dx = deltas[..., 0] / wx
        dy = deltas[..., 1] / wy
        dw = (deltas[..., 2] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[..., 3] / wh).clamp(max=self.scale_clamp)
        cx = dx * aw + ax
        cy = dy * ah + ay
        half_w = 0.5 * torch.exp(dw) * aw
        half_h = 0.5 * torch.exp(dh) * ah
        return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)
