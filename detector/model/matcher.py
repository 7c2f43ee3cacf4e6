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


#: IoU elements of one block on CPU: each op is split over the intra-op threads and the block's
#: temporaries stay in cache (batch 8, 200 boxes, 49,104 anchors, 2 threads: 0.48 s at 2^15
#: elements, 0.44 s at 2^18, 0.58 s at 2^20).
CPU_BLOCK_ELEMENTS = 1 << 18
#: Fewest anchors in a CPU block, so that many boxes do not make blocks of a handful of anchors.
CPU_MIN_BLOCK_ANCHORS = 64


def _coords(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """x1, y1, x2, y2 and area of boxes (..., 4), each (...)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return x1, y1, x2, y2, (x2 - x1) * (y2 - y1)


def _iou(box: tuple[Tensor, ...], anchor: tuple[Tensor, ...]) -> Tensor:
    """IoU of broadcastable box and anchor coordinates (from `_coords`).

    The same operations in the same order as torchvision.ops.box_iou, so the values are
    bit-identical to it (the matcher compares IoUs for equality).
    """
    bx1, by1, bx2, by2, barea = box
    ax1, ay1, ax2, ay2, aarea = anchor
    inter = (torch.minimum(bx2, ax2) - torch.maximum(bx1, ax1)).clamp_(min=0)
    inter.mul_((torch.minimum(by2, ay2) - torch.maximum(by1, ay1)).clamp_(min=0))
    union = (barea + aarea).sub_(inter)
    return inter.div_(union)


class Matcher:
    """Matches anchors to padded ground truth.

    Args:
        fg_iou: IoU at or above which an anchor is foreground.
        bg_iou: IoU below which an anchor is background.
        allow_low_quality_matches: let each box claim its best anchors whatever their IoU.
        max_chunk_elements: bound on N * M * anchors of one IoU block (CUDA; on CPU blocks are
            smaller still, see CPU_BLOCK_ELEMENTS).

    The IoU (N, M, R) is never held whole: blocks of anchors are reduced as they come to each
    anchor's best box and each box's best IoU within the block. A box's best anchors (for the
    low-quality rule) are then found by recomputing the IoU of that box only in the blocks that
    hold its best value.
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

    def _block_size(self, n: int, m: int, device: torch.device) -> int:
        per_anchor = max(1, n * m)
        block = max(1, self.max_chunk_elements // per_anchor)
        if device.type == "cpu":
            block = min(block, max(CPU_MIN_BLOCK_ANCHORS, CPU_BLOCK_ELEMENTS // per_anchor))
        return block

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

        box = tuple(c[:, :, None] for c in _coords(gt_boxes.float()))  # each (N, M, 1)
        anchor = _coords(anchors.float())  # each (R,)
        padded = ~valid[:, :, None]  # (N, M, 1)
        any_padded = bool(padded.any())
        block = self._block_size(n, m, device)
        num_blocks = -(-r // block)

        best_iou = torch.empty((n, r), device=device)  # (N, R)
        best_box = torch.empty((n, r), dtype=torch.int64, device=device)  # (N, R)
        block_best = torch.empty((num_blocks, n, m), device=device)  # best IoU of each box in each block
        for j, start in enumerate(range(0, r, block)):
            stop = min(r, start + block)
            iou = _iou(box, tuple(c[start:stop] for c in anchor))  # (N, M, block)
            if any_padded:
                iou.masked_fill_(padded, -1.0)
            best_iou[:, start:stop], best_box[:, start:stop] = iou.max(dim=1)
            torch.amax(iou, dim=2, out=block_best[j])

        matches = best_box.clone()
        matches[best_iou < self.fg_iou] = IGNORE
        matches[best_iou < self.bg_iou] = BACKGROUND

        if self.allow_low_quality_matches:
            # A box's best anchors; boxes that overlap no anchor at all (IoU 0) claim nothing.
            best_per_box = block_best.amax(dim=0)  # (N, M)
            target = torch.where(best_per_box > 0, best_per_box, torch.full_like(best_per_box, 2.0))
            hit_block, hit_image, hit_box = torch.nonzero(block_best == target).unbind(1)  # (Q,) each
            # Recompute those (box, block) IoUs only; the last block is padded with empty anchors.
            pad = num_blocks * block - r
            padded_anchors = torch.cat([anchors.float(), anchors.new_zeros((pad, 4), dtype=torch.float32)])
            hit_anchors = padded_anchors.view(num_blocks, block, 4)[hit_block]  # (Q, block, 4)
            hit_boxes = gt_boxes.float()[hit_image, hit_box][:, None, :]  # (Q, 1, 4)
            iou = _iou(_coords(hit_boxes), _coords(hit_anchors))  # (Q, block)
            q, offset = torch.nonzero(iou == target[hit_image, hit_box][:, None]).unbind(1)
            image, anchor_idx = hit_image[q], hit_block[q] * block + offset
            matches[image, anchor_idx] = best_box[image, anchor_idx]
        return matches
