"""IoU matcher: assigns each anchor to a ground-truth box, to background, or to 'ignore'.

Shape symbols: N images, M ground-truth boxes per image (padded), R anchors.

Batched over the images of a padded batch (no Python loop over images). The IoU matrix is
built in chunks of anchors so that its peak size stays bounded (N x M x chunk), which keeps 1,000
boxes per image on large images within memory.

With many boxes per image most of that matrix is zero: an anchor overlaps the few boxes near
it. On CPU, from CULL_MIN_BOXES boxes per image, the anchors are therefore put in tiles (blocks of
anchors of similar size with nearby centres) and the IoU is computed only for the (box, tile)
pairs whose rectangles overlap; every other IoU is exactly 0, so the result is the dense one, bit
for bit (the same float operations on the same pairs; ties resolved the same way).

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


#: Boxes per image from which the CPU matcher culls (box, tile) pairs that cannot overlap; below
#: it the dense matrix costs as much or less. Batch 8, 49,104 anchors, 2 threads, dense / culled
#: time (scripts/bench_parts.py, docs/bench/parts_cpu.json): 0.78x at 8 boxes, 1.34x at 20, 2.26x
#: at 200 (0.47 -> 0.21 s), 2.39x at 1,000 (1.84 -> 0.77 s).
CULL_MIN_BOXES = 16
#: Anchors of one tile of the culled path.
CULL_TILE_ANCHORS = 256


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


def _claim_target(best_per_box: Tensor) -> Tensor:
    """The IoU each box claims its anchors at: its best; 2 (never reached) for a box that overlaps
    no anchor at all (best IoU 0), which claims nothing."""
    return torch.where(best_per_box > 0, best_per_box, torch.full_like(best_per_box, 2.0))


def _claimed(boxes: Tensor, block_anchors: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(hit, offset) of the anchors whose IoU with their hit's box equals its target.

    Args: boxes (Q, 4), one box per hit; block_anchors (Q, B, 4), the block of anchors holding that
    box's best IoU; target (Q,), that IoU. Returns (P,) each: the hit and the anchor's offset in
    its block.
    """
    iou = _iou(_coords(boxes[:, None, :]), _coords(block_anchors))  # (Q, B)
    return torch.nonzero(iou == target[:, None]).unbind(1)


class Matcher:
    """Matches anchors to padded ground truth.

    Args:
        fg_iou: IoU at or above which an anchor is foreground.
        bg_iou: IoU below which an anchor is background.
        allow_low_quality_matches: let each box claim its best anchors whatever their IoU.
        max_chunk_elements: bound on the IoU elements computed at a time (N * M * anchors of a
            dense block; on CPU blocks are smaller still, see CPU_BLOCK_ELEMENTS).
        cull: compute the IoU only for (box, anchor tile) pairs that overlap (same result); None
            chooses: on CPU from CULL_MIN_BOXES boxes per image.

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
        cull: bool | None = None,
    ) -> None:
        if not 0.0 <= bg_iou <= fg_iou <= 1.0:
            raise ValueError(f"need 0 <= bg_iou <= fg_iou <= 1, got bg_iou={bg_iou}, fg_iou={fg_iou}")
        self.fg_iou = fg_iou
        self.bg_iou = bg_iou
        self.allow_low_quality_matches = allow_low_quality_matches
        self.max_chunk_elements = max_chunk_elements
        self.cull = cull

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

        gt_boxes, anchors = gt_boxes.float(), anchors.float()
        cull = self.cull if self.cull is not None else device.type == "cpu" and m >= CULL_MIN_BOXES
        if cull:
            budget = self.max_chunk_elements
            if device.type == "cpu":
                budget = min(budget, CPU_BLOCK_ELEMENTS)
            best_iou, best_box, hits = _culled_best(gt_boxes, valid, anchors, self.allow_low_quality_matches, budget)
        else:
            best_iou, best_box, hits = self._dense_best(gt_boxes, valid, anchors, self.allow_low_quality_matches)

        matches = best_box.clone()
        matches[best_iou < self.fg_iou] = IGNORE
        matches[best_iou < self.bg_iou] = BACKGROUND
        if hits is not None:
            image, anchor_idx = hits
            matches[image, anchor_idx] = best_box[image, anchor_idx]
        return matches

    def _dense_best(
        self, gt_boxes: Tensor, valid: Tensor, anchors: Tensor, low_quality: bool
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        """Each anchor's best IoU and box (N, R), and the (image, anchor) low-quality matches, from
        the whole IoU matrix taken in blocks of anchors."""
        n, m = valid.shape
        r = anchors.shape[0]
        device = anchors.device
        box = tuple(c[:, :, None] for c in _coords(gt_boxes))  # each (N, M, 1)
        anchor = _coords(anchors)  # each (R,)
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
        if not low_quality:
            return best_iou, best_box, None

        # A box's best anchors: recompute the IoU of the (box, block) pairs that hold its best
        # value only; the last block is padded with empty anchors.
        target = _claim_target(block_best.amax(dim=0))  # (N, M)
        hit_block, hit_image, hit_box = torch.nonzero(block_best == target).unbind(1)  # (Q,) each
        pad = num_blocks * block - r
        blocks = torch.cat([anchors, anchors.new_zeros((pad, 4))]).view(num_blocks, block, 4)
        q, offset = _claimed(gt_boxes[hit_image, hit_box], blocks[hit_block], target[hit_image, hit_box])
        return best_iou, best_box, (hit_image[q], hit_block[q] * block + offset)


def _tile_order(anchors: Tensor) -> Tensor:
    """(R,) permutation that puts anchors of one size octave and nearby centres next to each other.

    Sorted by (octave of the anchor's side, tile row, tile column, original index); a tile's side
    is twice the octave's anchor side, so a tile holds a few anchor strides of a pyramid level.
    """
    x1, y1, x2, y2, area = _coords(anchors)
    octave = torch.log2(area.clamp(min=1.0).sqrt()).round()
    side = torch.exp2(octave) * 2
    tile_x = torch.div((x1 + x2) / 2, side, rounding_mode="floor")
    tile_y = torch.div((y1 + y2) / 2, side, rounding_mode="floor")
    order = torch.argsort(tile_x, stable=True)
    order = order[torch.argsort(tile_y[order], stable=True)]
    return order[torch.argsort(octave[order], stable=True)]


def _culled_best(
    gt_boxes: Tensor, valid: Tensor, anchors: Tensor, low_quality: bool, budget: int
) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
    """`Matcher._dense_best` from the IoUs of (box, tile) pairs whose rectangles overlap; at most
    `budget` IoU elements at a time.

    An anchor can have IoU > 0 only with a box that overlaps its tile's bounding rectangle; all
    other IoUs are 0. Tiles are processed in groups (image, tile) with the image's overlapping
    boxes in ascending order, so ties go to the lowest box index, as in the dense matrix.
    """
    n, m = valid.shape
    r = anchors.shape[0]
    device = anchors.device
    t = CULL_TILE_ANCHORS
    num_tiles = -(-r // t)
    order = _tile_order(anchors)  # (R,)
    # Pad the last tile with copies of its last anchor: same IoUs, dropped when mapping back.
    tiled = torch.cat([anchors[order], anchors[order[-1:]].expand(num_tiles * t - r, 4)]).view(num_tiles, t, 4)
    tile_rect = torch.cat([tiled[..., :2].amin(dim=1), tiled[..., 2:].amax(dim=1)], dim=1)  # (T, 4)

    bx1, by1, bx2, by2 = (c[:, None, :] for c in gt_boxes.unbind(-1))  # each (N, 1, M)
    tx1, ty1, tx2, ty2 = (c[None, :, None] for c in tile_rect.unbind(-1))  # each (1, T, 1)
    overlap = (bx1 < tx2) & (bx2 > tx1) & (by1 < ty2) & (by2 > ty1) & valid[:, None, :]  # (N, T, M)
    counts = overlap.sum(dim=2).view(-1)  # (N * T,) boxes of each (image, tile) group
    # Each group's boxes first, in ascending order (a stable sort of the flags, descending).
    slots = torch.sort(overlap.view(-1, m).to(torch.uint8), dim=1, descending=True, stable=True).indices

    # Anchors that overlap no box: IoU 0 with the image's first valid box (what the dense max picks);
    # an image without boxes: -1 (all padding), so that it is background whatever bg_iou is.
    has_box = valid.any(dim=1)
    first_valid = valid.to(torch.uint8).argmax(dim=1)
    tile_iou = torch.where(has_box, 0.0, -1.0)[:, None].expand(n, num_tiles * t).contiguous()  # (N, T*t)
    tile_box = first_valid[:, None].expand(n, num_tiles * t).contiguous()  # (N, T*t)
    tile_iou, tile_box = tile_iou.view(-1, t), tile_box.view(-1, t)  # (N*T, t)
    best_per_box = torch.zeros((n * m,), device=device)  # (N*M,) flat
    seen = []  # (groups, box slots, slot mask, best IoU of each slot in its tile) per chunk

    groups = torch.nonzero(counts).squeeze(1)
    groups = groups[torch.argsort(counts[groups], stable=True)]  # by size: little padding per chunk
    sizes = counts[groups].tolist()
    start = 0
    while start < len(groups):
        stop = start + 1
        while stop < len(groups) and (stop + 1 - start) * sizes[stop] * t <= budget:
            stop += 1
        width = sizes[stop - 1]
        g = groups[start:stop]  # (G,)
        image, tile = g // num_tiles, g % num_tiles
        idx = slots[g, :width]  # (G, W)
        ok = torch.arange(width, device=device) < counts[g][:, None]  # (G, W)
        box = tuple(c[:, :, None] for c in _coords(gt_boxes[image[:, None], idx]))  # each (G, W, 1)
        iou = _iou(box, tuple(c[:, None, :] for c in _coords(tiled[tile])))  # (G, W, t)
        iou.masked_fill_(~ok[:, :, None], -1.0)
        value, arg = iou.max(dim=1)  # (G, t)
        tile_iou[g], tile_box[g] = value, idx.gather(1, arg)
        if low_quality:
            slot_best = iou.amax(dim=2)  # (G, W)
            flat = (image[:, None] * m + idx)[ok]
            best_per_box.scatter_reduce_(0, flat, slot_best[ok], reduce="amax")
            seen.append((g, idx, ok, slot_best))
        start = stop

    best_iou = torch.empty((n, r), device=device)
    best_box = torch.empty((n, r), dtype=torch.int64, device=device)
    best_iou[:, order] = tile_iou.view(n, -1)[:, :r]
    best_box[:, order] = tile_box.view(n, -1)[:, :r]
    # An IoU of 0 with every box it was compared with: the dense max picks the first valid box.
    best_box = torch.where(best_iou == 0, first_valid[:, None], best_box)
    if not low_quality:
        return best_iou, best_box, None

    if not seen:  # no box overlaps any anchor
        empty = torch.zeros((0,), dtype=torch.int64, device=device)
        return best_iou, best_box, (empty, empty)
    # A box's best anchors: recompute the IoU of the (group, box) pairs that hold its best value.
    target = _claim_target(best_per_box)  # (N*M,) flat
    hit_groups, hit_boxes = [], []
    for g, idx, ok, slot_best in seen:
        image = (g // num_tiles)[:, None].expand_as(idx)
        hit = ok & (slot_best == target[image * m + idx])  # (G, W)
        hit_groups.append(g[:, None].expand_as(idx)[hit])
        hit_boxes.append(idx[hit])
    g, box_idx = torch.cat(hit_groups), torch.cat(hit_boxes)  # (Q,) each
    image, tile = g // num_tiles, g % num_tiles
    q, offset = _claimed(gt_boxes[image, box_idx], tiled[tile], target[image * m + box_idx])
    position = tile[q] * t + offset  # in tile order; copies past R are padding
    keep = position < r
    return best_iou, best_box, (image[q][keep], order[position[keep]])
