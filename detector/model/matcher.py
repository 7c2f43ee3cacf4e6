"""Matcher: assigns each anchor to a ground-truth box, to background, or to "ignore".

Shape symbols: N images, M ground-truth boxes per image (padded), R anchors.

The rule (Lin et al. 2017), as `match_anchors` writes it over the IoU matrix (N, M, R):
- an anchor whose best IoU is >= fg_iou is foreground, matched to that box;
- one whose best IoU is < bg_iou is background;
- in between it is ignored (adds no loss);
- with allow_low_quality_matches, each box also claims the anchors that overlap it most (ties
  included), so that no box is left without an anchor; such an anchor keeps its own best box
  (torchvision's and detectron2's rule). A box that overlaps no anchor at all claims nothing.

`fast_matcher` finds the same best IoUs and claims without holding the whole matrix (blocks of
anchors, and on CPU only the (box, anchor tile) pairs that can overlap); `Matcher` chooses.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou

from .config import IMPLEMENTATIONS
from .fast_matcher import best_matches

#: Matched-index value of an anchor that is background (IoU < bg_iou with every box).
BACKGROUND = -1
#: Matched-index value of an anchor that is neither foreground nor background; it adds no loss.
IGNORE = -2


def label_anchors(best_iou: Tensor, best_box: Tensor, claimed: Tensor, fg_iou: float, bg_iou: float) -> Tensor:
    """(N, R) matches from each anchor's best IoU (N, R), its box (N, R) and the low-quality claims (N, R) bool."""
    matches = best_box.clone()
    matches[best_iou < fg_iou] = IGNORE
    matches[best_iou < bg_iou] = BACKGROUND
    return torch.where(claimed, best_box, matches)


def match_anchors(gt_boxes: Tensor, valid: Tensor, anchors: Tensor, fg_iou: float = 0.5, bg_iou: float = 0.4,
                  allow_low_quality_matches: bool = True) -> Tensor:
    """The matching rule over the whole IoU matrix; see the module doc and `Matcher.__call__`."""
    iou = torch.stack([box_iou(boxes, anchors) for boxes in gt_boxes.float()])  # (N, M, R)
    iou.masked_fill_(~valid[:, :, None], -1.0)  # padding never matches
    best_iou, best_box = iou.max(dim=1)  # (N, R), ties to the lowest box index
    claimed = torch.zeros_like(best_iou, dtype=torch.bool)  # (N, R)
    if allow_low_quality_matches:
        best_per_box = iou.amax(dim=2, keepdim=True)  # (N, M, 1)
        claimed = ((iou == best_per_box) & (best_per_box > 0)).any(dim=1)
    return label_anchors(best_iou, best_box, claimed, fg_iou, bg_iou)


class Matcher:
    """Matches anchors to padded ground truth.

    Args:
        fg_iou: IoU at or above which an anchor is foreground.
        bg_iou: IoU below which an anchor is background.
        allow_low_quality_matches: let each box claim its best anchors whatever their IoU.
        implementation: "reference" runs `match_anchors`; "fast" runs `fast_matcher.best_matches`
            (the same matches, without the whole IoU matrix in memory; its switches:
            `fast_matcher.settings`).
    """

    def __init__(
        self, fg_iou: float = 0.5, bg_iou: float = 0.4, allow_low_quality_matches: bool = True, *,
        implementation: str = "fast",
    ) -> None:
        if not 0.0 <= bg_iou <= fg_iou <= 1.0:
            raise ValueError(f"need 0 <= bg_iou <= fg_iou <= 1, got bg_iou={bg_iou}, fg_iou={fg_iou}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
        self.fg_iou = fg_iou
        self.bg_iou = bg_iou
        self.allow_low_quality_matches = allow_low_quality_matches
        self.implementation = implementation

    @torch.no_grad()
    def __call__(self, gt_boxes: Tensor, valid: Tensor, anchors: Tensor) -> Tensor:
        """Matched box index per anchor.

        Args:
            gt_boxes: (N, M, 4) XYXY ground truth, padded.
            valid: (N, M) bool, False for padding.
            anchors: (R, 4) XYXY, shared by the batch.

        Returns:
            (N, R) int64: the index 0..M-1 of the matched box for foreground anchors,
            BACKGROUND or IGNORE otherwise. An image without valid boxes is all BACKGROUND.
        """
        n, m = valid.shape
        if m == 0 or not bool(valid.any()):
            return torch.full((n, anchors.shape[0]), BACKGROUND, dtype=torch.int64, device=anchors.device)
        if self.implementation == "reference":
            return match_anchors(gt_boxes, valid, anchors, self.fg_iou, self.bg_iou, self.allow_low_quality_matches)
        best_iou, best_box, claimed = best_matches(gt_boxes.float(), valid, anchors.float(),
                                                   self.allow_low_quality_matches)
        return label_anchors(best_iou, best_box, claimed, self.fg_iou, self.bg_iou)
