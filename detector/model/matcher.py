"""IoU matcher: assigns each anchor to a ground-truth box, to background, or to 'ignore'.

Shape symbols: N images, M ground-truth boxes per image (padded), R anchors.

Batched over the images of a padded batch (no Python loop over images). The IoU matrix is
built in chunks of anchors so that its peak size stays bounded (N x M x chunk), which keeps 1,000
boxes per image on large images within memory.

Rules (Lin et al. 2017): IoU >= fg_iou -> foreground (the box with the largest IoU);
IoU < bg_iou -> background; in between -> ignored. With allow_low_quality_matches, each
ground-truth box also claims the anchors that overlap it most (ties included), so that no box is
left without an anchor; such an anchor keeps its own best box (torchvision's and detectron2's rule).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou

#: Matched-index value of an anchor that is background (IoU < bg_iou with every box).
BACKGROUND = -1
#: Matched-index value of an anchor that is neither foreground nor background; it adds no loss.
IGNORE = -2


class Matcher:
    """Matches anchors to padded ground truth.

    Args:
        fg_iou: IoU at or above which an anchor is foreground.
        bg_iou: IoU below which an anchor is background.
        allow_low_quality_matches: let each box claim its best anchors whatever their IoU.
        max_chunk_elements: bound on N * M * chunk_of_anchors of one IoU block.
    """

    def __init__(
        self,
        fg_iou: float = 0.5,
        bg_iou: float = 0.4,
        allow_low_quality_matches: bool = True,
        max_chunk_elements: int = 1 << 24,
    ) -> None:
        if not 0.0 <= bg_iou <= fg_iou <= 1.0:
            raise ValueError(f"need 0 <= bg_iou <= fg_iou <= 1, got bg_iou={bg_iou}, fg_iou={fg_iou}")
        self.fg_iou = fg_iou
        self.bg_iou = bg_iou
        self.allow_low_quality_matches = allow_low_quality_matches
        self.max_chunk_elements = max_chunk_elements

    def _iou_blocks(self, gt_boxes: Tensor, valid: Tensor, anchors: Tensor):
        """Yields (start, iou (N, M, chunk)) with IoU -1 for padded boxes."""
        n, m = valid.shape
        chunk = max(1, self.max_chunk_elements // max(1, n * m))
        flat_gt = gt_boxes.reshape(-1, 4).float()
        for start in range(0, anchors.shape[0], chunk):
            block = box_iou(flat_gt, anchors[start : start + chunk].float()).view(n, m, -1)
            yield start, block.masked_fill_(~valid[:, :, None], -1.0)

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
        r = anchors.shape[0]
        device = anchors.device
        if m == 0 or not bool(valid.any()):
            return torch.full((n, r), BACKGROUND, dtype=torch.int64, device=device)

        best_iou = torch.empty((n, r), device=device)  # (N, R)
        best_box = torch.empty((n, r), dtype=torch.int64, device=device)  # (N, R)
        best_per_box = torch.full((n, m), -1.0, device=device)  # (N, M)
        blocks = []
        for start, iou in self._iou_blocks(gt_boxes, valid, anchors):
            stop = start + iou.shape[-1]
            best_iou[:, start:stop], best_box[:, start:stop] = iou.max(dim=1)
            best_per_box = torch.maximum(best_per_box, iou.amax(dim=2))
            blocks.append(iou)
        single_block = len(blocks) == 1
        if not single_block:
            blocks = []  # recompute in the second pass instead of holding every block

        matches = best_box.clone()
        matches[best_iou < self.fg_iou] = IGNORE
        matches[best_iou < self.bg_iou] = BACKGROUND

        if self.allow_low_quality_matches:
            # A box's best anchors; boxes that overlap no anchor at all (IoU 0) claim nothing.
            target = torch.where(best_per_box > 0, best_per_box, torch.full_like(best_per_box, 2.0))
            blocks_iter = ((0, blocks[0]),) if single_block else self._iou_blocks(gt_boxes, valid, anchors)
            for start, iou in blocks_iter:
                stop = start + iou.shape[-1]
                claimed = (iou == target[:, :, None]).any(dim=1)  # (N, chunk)
                seg = matches[:, start:stop]
                seg[claimed] = best_box[:, start:stop][claimed]
        return matches
