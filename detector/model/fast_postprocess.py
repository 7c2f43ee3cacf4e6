"""Fast path of post-processing: `postprocess.detect_reference`'s detections, batched over images.

Shape symbols: N images, R anchors, K classes, C candidates per image.

Top-k runs on the logits (N, R_l * K) of each level (the sigmoid is monotonic: the same
candidates, and R * K sigmoids fewer) and first picks the best anchors (`top_pairs`); decoding
runs on (N, C, 4), and class-wise NMS on every image and class at once (the NMS group of a
candidate is image * K + class).

NMS stops early, exactly: greedy NMS keeps or drops a candidate by the higher-scoring candidates
of its own group alone, so NMS over an image's P best candidates decides those P exactly as NMS
over all of them would. When that leaves at least detections_per_img boxes, the rest cannot
change the output; otherwise the images short of boxes go again with 4x the prefix. On CPU, NMS
of many boxes runs group by group over contiguous slices (one sort), instead of torchvision's
per-group scan of every box (`class_wise_nms`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms, nms



#: First NMS round: this many times detections_per_img best candidates per image; then x4.
PREFIX_FACTOR = 4
#: Above this many boxes on CPU, NMS goes group by group (torchvision switches at 1,000 too).
GROUPED_NMS_MIN_BOXES = 1000


def class_wise_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """torchvision.ops.batched_nms, faster for many boxes on CPU; same kept set.

    Args: boxes (M, 4) XYXY, scores (M,), groups (M,) int64 (NMS never crosses groups).
    Returns: indices of the kept boxes, by decreasing score (stable among equal scores).
    """
    if boxes.device.type != "cpu" or len(boxes) <= GROUPED_NMS_MIN_BOXES:
        return batched_nms(boxes, scores, groups, iou_threshold)
    # one sort: by group, then by decreasing score; then NMS over each group's contiguous slice
    by_score = scores.argsort(descending=True, stable=True)
    order = by_score[groups[by_score].argsort(stable=True)]
    sorted_boxes, sorted_scores = boxes[order], scores[order]
    kept, start = [], 0
    for count in torch.bincount(groups[order]).tolist():
        if count:
            kept.append(nms(sorted_boxes[start:start + count], sorted_scores[start:start + count], iou_threshold)
                        + start)
        start += count
    keep = order[torch.cat(kept)]
    return keep[scores[keep].argsort(descending=True, stable=True)]


def top_pairs(logits: Tensor, top: int) -> tuple[Tensor, Tensor]:
    """The `top` largest (anchor, class) logits of each image, as `logits.flatten(1).topk(top)`.

    Args: logits (N, R, K); top <= R * K.
    Returns: values (N, top) and flat indices anchor * K + class (N, top), largest first.

    The top-th largest pair is at least the top-th largest anchor maximum (the best `top` anchors
    hold `top` pairs that reach it), so every pair of the result lies in those `top` anchors:
    one pass for the maxima, then top-k over `top` x K pairs instead of R x K (the same set up to
    the choice among equal values at the boundary, which topk leaves open too).
    """
    n, r, k = logits.shape
    if top >= r:
        return logits.flatten(1).topk(top, dim=1)
    anchors = logits.amax(dim=2).topk(top, dim=1).indices  # (N, top)
    pairs = torch.gather(logits, 1, anchors[..., None].expand(-1, -1, k))  # (N, top, K)
    values, idx = pairs.flatten(1).topk(top, dim=1)  # (N, top)
    anchor = torch.gather(anchors, 1, torch.div(idx, k, rounding_mode="floor"))
    return values, anchor * k + idx % k


@torch.no_grad()
def detect_fast(post, cls_logits: Tensor, box_deltas: Tensor, anchors: Tensor, num_anchors_per_level: Sequence[int],
                image_sizes: Tensor) -> list[dict[str, Tensor]]:
    """`postprocess.detect_reference`'s detections; `post` is the PostProcessor with the settings."""
    n, _, k = cls_logits.shape
    logits_all, anchor_idx_all, labels_all = [], [], []
    start = 0
    for count, logits in zip(num_anchors_per_level, cls_logits.split(list(num_anchors_per_level), dim=1)):
        top_logits, top_idx = top_pairs(logits, min(post.topk_candidates, count * k))  # (N, top)
        logits_all.append(top_logits)
        anchor_idx_all.append(torch.div(top_idx, k, rounding_mode="floor") + start)
        labels_all.append(top_idx % k)
        start += count
    # every candidate of an image, best first: (N, C)
    scores, order = torch.sigmoid(torch.cat(logits_all, dim=1).float()).sort(dim=1, descending=True, stable=True)
    anchor_idx = torch.cat(anchor_idx_all, dim=1).gather(1, order)  # (N, C)
    labels = torch.cat(labels_all, dim=1).gather(1, order)  # (N, C)

    deltas = torch.gather(box_deltas, 1, anchor_idx[..., None].expand(-1, -1, 4))  # (N, C, 4)
    boxes = post.box_coder.decode(deltas, anchors[anchor_idx])  # (N, C, 4) float32
    sizes = image_sizes.to(boxes)
    upper = torch.stack([sizes[:, 1], sizes[:, 0], sizes[:, 1], sizes[:, 0]], dim=1)[:, None, :]  # (N, 1, 4)
    boxes = torch.minimum(boxes.clamp(min=0), upper)
    return _nms(boxes, scores, labels, k, post.score_thresh, post.nms_thresh, post.detections_per_img)


def _nms(boxes: Tensor, scores: Tensor, labels: Tensor, k: int, score_thresh: float, nms_thresh: float,
         d: int) -> list[dict[str, Tensor]]:
    """Class-wise NMS of each image's candidates, sorted best first: (N, C, 4), (N, C), (N, C); K classes;
    at most d detections an image."""
    n, c = scores.shape
    passing = (scores > score_thresh).sum(dim=1)  # (N,): a prefix of each row
    detections: list[dict[str, Tensor] | None] = [None] * n
    todo = torch.arange(n, device=scores.device)
    prefix = min(c, PREFIX_FACTOR * d)
    while len(todo):
        s = scores[todo, :prefix]  # (T, P)
        keep = s > score_thresh
        image = torch.arange(len(todo), device=s.device)[:, None].expand_as(s)[keep]
        flat_boxes, flat_scores, flat_labels = boxes[todo, :prefix][keep], s[keep], labels[todo, :prefix][keep]
        kept = class_wise_nms(flat_boxes, flat_scores, image * k + flat_labels, nms_thresh)
        kept_image = image[kept]  # by decreasing score within each image
        enough = torch.bincount(kept_image, minlength=len(todo)) >= d
        done = enough | (passing[todo] <= prefix) | (prefix >= c)
        for j in done.nonzero().flatten().tolist():
            sel = kept[kept_image == j][:d]
            detections[int(todo[j])] = {"boxes": flat_boxes[sel], "scores": flat_scores[sel],
                                        "labels": flat_labels[sel]}
        todo, prefix = todo[~done], min(c, prefix * PREFIX_FACTOR)
    return detections  # type: ignore[return-value]
