"""Fast path of post-processing: `postprocess.detect_reference`'s detections, batched over images.

It is the one fast path: eager inference (`PostProcessor`) and the export graph (`export/graph.py`,
ONNX and torch.export) both run `detect_padded`.

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

import sys
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms, nms

from .preprocess import dims, smaller, tracing

#: Label of a padding row of `detect_padded`.
NO_LABEL = -1
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
    levels = list(num_anchors_per_level)
    return unpad(*detect_padded(post, cls_logits.split(levels, dim=1), box_deltas.split(levels, dim=1),
                                anchors.split(levels), image_sizes))


def detect_padded(post, level_logits: Sequence[Tensor], level_deltas: Sequence[Tensor], level_anchors: Sequence[Tensor],
                  image_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The detections of the module doc, padded to D = detections_per_img rows: eager, traced and exported alike.

    Args: per level, cls logits (N, R_l, K), box deltas (N, R_l, 4) and anchors (R_l, 4); image_sizes
    (N, 2) (h, w) the boxes are clipped to, or (1, 2) for a batch of one size.
    Returns: boxes (N, D, 4) float32, scores (N, D), labels (N, D) int64, num_detections (N,) int64; rows
    by decreasing score; padding rows hold boxes 0, scores 0 and labels NO_LABEL.

    Eagerly, NMS stops early (`_nms`); while tracing or exporting it is one `ClassWiseNMS` (one ONNX
    NonMaxSuppression node), which keeps the same boxes.
    """
    k = level_logits[0].shape[2]
    logits_all, deltas_all, anchors_all, labels_all = [], [], [], []
    for logits, deltas, anchors in zip(level_logits, level_deltas, level_anchors):
        if tracing():  # the number of anchors is symbolic: the plain top-k, whose set top_pairs equals
            flat = logits.flatten(1)
            top_logits, top_idx = flat.topk(smaller(post.topk_candidates, dims(flat, 1)[0]), dim=1)
        else:
            top_logits, top_idx = top_pairs(logits, min(post.topk_candidates, logits.shape[1] * k))  # (N, top)
        anchor_idx = torch.div(top_idx, k, rounding_mode="floor")
        logits_all.append(top_logits)
        labels_all.append(top_idx % k)
        deltas_all.append(torch.gather(deltas, 1, anchor_idx[..., None].expand(-1, -1, 4)))  # (N, top, 4)
        anchors_all.append(anchors[anchor_idx])  # (N, top, 4)
    scores = torch.sigmoid(torch.cat(logits_all, dim=1).float())  # (N, C)
    labels = torch.cat(labels_all, dim=1)  # (N, C)
    boxes = post.box_coder.decode(torch.cat(deltas_all, dim=1), torch.cat(anchors_all, dim=1))  # (N, C, 4) float32
    sizes = image_sizes.to(boxes)
    upper = torch.stack([sizes[:, 1], sizes[:, 0], sizes[:, 1], sizes[:, 0]], dim=1)[:, None, :]  # (N, 1, 4)
    boxes = torch.minimum(boxes.clamp(min=0), upper)
    if tracing():
        return _nms_traceable(boxes, scores, labels, k, post.score_thresh, post.nms_thresh, post.detections_per_img)
    scores, order = scores.sort(dim=1, descending=True, stable=True)  # every candidate of an image, best first
    labels = labels.gather(1, order)
    boxes = boxes.gather(1, order[..., None].expand(-1, -1, 4))
    return pad(_nms(boxes, scores, labels, k, post.score_thresh, post.nms_thresh, post.detections_per_img),
               post.detections_per_img)


def pad(detections: list[dict[str, Tensor]], d: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One dict per image ("boxes" (D_n, 4), "scores", "labels") -> `detect_padded`'s padded tensors."""
    boxes = torch.stack([F.pad(det["boxes"], (0, 0, 0, d - len(det["boxes"]))) for det in detections])
    scores = torch.stack([F.pad(det["scores"], (0, d - len(det["scores"]))) for det in detections])
    labels = torch.stack([F.pad(det["labels"], (0, d - len(det["labels"])), value=NO_LABEL) for det in detections])
    return boxes, scores, labels, torch.tensor([len(det["scores"]) for det in detections], device=boxes.device)


def unpad(boxes: Tensor, scores: Tensor, labels: Tensor, num_detections: Tensor) -> list[dict[str, Tensor]]:
    """The padded outputs -> one dict per image with "boxes" (D_n, 4), "scores" (D_n,), "labels" (D_n,)."""
    return [{"boxes": b[:m], "scores": s[:m], "labels": l[:m]}
            for b, s, l, m in zip(boxes, scores, labels, num_detections.tolist())]


class ClassWiseNMS(torch.autograd.Function):
    """NMS of each image and class apart, as ONNX's NonMaxSuppression defines it.

    Args: boxes (N, C, 4) XYXY, scores (N, K, C) (a candidate scores only in its own class),
    iou_threshold, score_threshold (only scores above it are kept).
    Returns: selected (T, 3) int64 rows (image, class, candidate).

    In eager mode and under torch.export it is NMS over the groups image * K + class, each group's
    boxes shifted apart as torchvision's batched_nms does (its choice of algorithm by box count is a
    branch torch.export cannot take on a data-dependent count); exported to ONNX it is one
    NonMaxSuppression node, which runs every image and class apart (no shifted coordinates).
    """

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float) -> Tensor:
        n, k, c = scores.shape
        selected = (scores > score_threshold).nonzero()  # (S, 3): image, class, candidate
        image, label, cand = selected.unbind(1)
        # two sentinel boxes in groups of their own: torchvision's nms declares its output size >= 2 to
        # torch.export, which a .pt2 then asserts at run time (an image with 0 or 1 boxes kept would fail)
        groups = torch.cat([image * k + label, torch.arange(n * k, n * k + 2, device=image.device)])
        flat_boxes = torch.cat([boxes[image, cand], boxes.new_tensor([[0.0, 0.0, 1.0, 1.0]] * 2)])
        flat_scores = torch.cat([scores[image, label, cand], scores.new_zeros(2)])
        offsets = groups.to(boxes) * (boxes.max() + 2)  # groups never overlap
        keep = nms(flat_boxes + offsets[:, None], flat_scores, iou_threshold)
        return selected[keep[keep < selected.shape[0]]]

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold: float, score_threshold: float):
        return g.op(
            "NonMaxSuppression", boxes, scores,
            g.op("Constant", value_t=torch.tensor([sys.maxsize], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([score_threshold], dtype=torch.float32)),
        )


def _nms_traceable(boxes: Tensor, scores: Tensor, labels: Tensor, k: int, score_thresh: float, nms_thresh: float,
                   d: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`_nms` without data-dependent Python control flow: (N, C, 4), (N, C), (N, C) candidates -> padded outputs."""
    # class-wise NMS within each image; a candidate scores only in its own class
    dense = torch.full_like(scores, -1.0)[:, None, :].repeat(1, k, 1)  # (N, K, C)
    candidate = torch.where(scores > score_thresh, scores, torch.full_like(scores, -1.0))
    dense = dense.scatter(1, labels[:, None, :], candidate[:, None, :])
    selected = ClassWiseNMS.apply(boxes, dense, nms_thresh, score_thresh)  # (T, 3)
    image, cand = selected[:, 0], selected[:, 2]
    kept = torch.full_like(scores, -1.0)  # (N, C): the score of each kept candidate, -1 elsewhere
    kept = kept.index_put((image, cand), scores[image, cand])
    # the best D of each image, best first, padded to D rows
    top = smaller(d, dims(kept, 1)[0])
    best, order = kept.topk(top, dim=1)  # (N, top)
    best = F.pad(best, (0, d - top), value=-1.0)
    order = F.pad(order, (0, d - top), value=0)
    valid = best > score_thresh  # (N, D)
    det_boxes = torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4))  # (N, D, 4)
    det_labels = torch.gather(labels, 1, order)
    zero = torch.zeros_like(best)
    return (torch.where(valid[..., None], det_boxes, zero[..., None]), torch.where(valid, best, zero),
            torch.where(valid, det_labels, torch.full_like(det_labels, NO_LABEL)), valid.sum(dim=1))


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
