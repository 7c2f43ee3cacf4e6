"""Fast path of the matcher: each anchor's best IoU and box, and the low-quality claims, without
the whole IoU matrix.

Shape symbols: N images, M ground-truth boxes per image (padded), R anchors.

The rule is `matcher.match_anchors` (an IoU matrix, then the thresholds); this finds the same
(best IoU, best box, claimed) triple that `matcher.label_anchors` turns into matches, and the
tests hold the two equal, bit for bit.

- dense: the IoU is built in blocks of anchors so that its peak size stays bounded (N x M x block),
  which keeps 1,000 boxes per image on large images within memory. Each block is reduced as it
  comes to each anchor's best box and each box's best IoU within the block; a box's best anchors
  (the low-quality claims) are then found by recomputing the IoU of that box only in the blocks
  that hold its best value.
- culled: with many boxes per image most of that matrix is zero (an anchor overlaps the few boxes
  near it). The anchors are put in tiles (blocks of anchors of similar size with nearby centres)
  and the IoU is computed only for the (box, tile) pairs whose rectangles overlap; every other IoU
  is exactly 0, so the result is the dense one, bit for bit (the same float operations on the
  same pairs; ties resolved the same way). Chosen by default on CPU from CULL_MIN_BOXES boxes per
  image. The speed of each: docs/benchmarks.md (scripts/bench_parts.py).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor

#: IoU elements of one block on CPU: each op is split over the intra-op threads and the block's
#: temporaries stay in cache.
CPU_BLOCK_ELEMENTS = 1 << 18
#: Fewest anchors in a CPU block, so that many boxes do not make blocks of a handful of anchors.
CPU_MIN_BLOCK_ANCHORS = 64


#: Boxes per image from which the CPU matcher culls (box, tile) pairs that cannot overlap; below
#: it the dense matrix costs as much or less.
CULL_MIN_BOXES = 16
#: Anchors of one tile of the culled path.
CULL_TILE_ANCHORS = 256

#: Switches of this path, module-wide (`settings` sets them for a block; the defaults are production's):
#: the bound on the IoU elements computed at a time (on CPU blocks are smaller still, see
#: CPU_BLOCK_ELEMENTS), and whether to cull (True/False), None choosing on CPU from CULL_MIN_BOXES boxes.
MAX_CHUNK_ELEMENTS = 1 << 24
CULL: bool | None = None


@contextmanager
def settings(*, cull: bool | None = None, max_chunk_elements: int | None = None):
    """Within the block: CULL = cull (dense or culled, forced) and MAX_CHUNK_ELEMENTS when given."""
    global CULL, MAX_CHUNK_ELEMENTS
    saved = CULL, MAX_CHUNK_ELEMENTS
    CULL = cull
    MAX_CHUNK_ELEMENTS = max_chunk_elements if max_chunk_elements is not None else MAX_CHUNK_ELEMENTS
    try:
        yield
    finally:
        CULL, MAX_CHUNK_ELEMENTS = saved


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


def best_matches(gt_boxes: Tensor, valid: Tensor, anchors: Tensor, low_quality: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Each anchor's best IoU (N, R) and box (N, R), and the anchors claimed by the low-quality rule (N, R) bool.

    Args:
        gt_boxes: (N, M, 4) float32 XYXY, padded; valid: (N, M) bool, some True; anchors: (R, 4) float32.
        low_quality: compute the claims (all False otherwise).
    Dense or culled (the same result) and the block bound as CULL and MAX_CHUNK_ELEMENTS say.
    """
    n, m = valid.shape
    device = anchors.device
    max_chunk_elements = MAX_CHUNK_ELEMENTS
    cull = CULL if CULL is not None else device.type == "cpu" and m >= CULL_MIN_BOXES
    budget = min(max_chunk_elements, CPU_BLOCK_ELEMENTS) if device.type == "cpu" else max_chunk_elements
    if cull:
        best_iou, best_box, hits = _culled_best(gt_boxes, valid, anchors, low_quality, budget)
    else:
        best_iou, best_box, hits = _dense_best(gt_boxes, valid, anchors, low_quality, max_chunk_elements)
    claimed = torch.zeros_like(best_iou, dtype=torch.bool)
    if hits is not None:
        claimed[hits] = True
    return best_iou, best_box, claimed


def _block_size(n: int, m: int, device: torch.device, max_chunk_elements: int) -> int:
    per_anchor = max(1, n * m)
    block = max(1, max_chunk_elements // per_anchor)
    if device.type == "cpu":
        block = min(block, max(CPU_MIN_BLOCK_ANCHORS, CPU_BLOCK_ELEMENTS // per_anchor))
    return block


def _dense_best(
    gt_boxes: Tensor, valid: Tensor, anchors: Tensor, low_quality: bool, max_chunk_elements: int
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
    block = _block_size(n, m, device, max_chunk_elements)
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
    """`_dense_best` from the IoUs of (box, tile) pairs whose rectangles overlap; at most
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
