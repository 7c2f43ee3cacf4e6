"""From head outputs to detections: score threshold, per-level top-k, decode, class-wise NMS.

Shape symbols: N images, R anchors, K classes, L levels, C candidates per image.

Batched over images: top-k runs on the logits (N, R_l * K) of each level (the sigmoid is
monotonic: the same candidates, and R * K sigmoids fewer), decoding on (N, C, 4), and class-wise
NMS on every image and class at once (the NMS group of a candidate is image * K + class).

NMS stops early, exactly: greedy NMS keeps or drops a candidate by the higher-scoring candidates
of its own group alone, so NMS over an image's P best candidates decides those P exactly as NMS
over all of them would. When that leaves at least detections_per_img boxes, the rest cannot
change the output; otherwise the images short of boxes go again with 4x the prefix. On CPU, NMS
of many boxes runs group by group over contiguous slices (one sort), instead of torchvision's
per-group scan of every box.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms, nms

from .box_coder import BoxCoder


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


class PostProcessor:
    """Args: score_thresh, topk_candidates (per level), nms_thresh, detections_per_img, box_coder."""

    def __init__(
        self, *, score_thresh: float = 0.05, topk_candidates: int = 1000, nms_thresh: float = 0.5,
        detections_per_img: int = 100, box_coder: BoxCoder | None = None,
    ) -> None:
        self.score_thresh = score_thresh
        self.topk_candidates = topk_candidates
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.box_coder = box_coder or BoxCoder()

    @torch.no_grad()
    def __call__(
        self, cls_logits: Tensor, box_deltas: Tensor, anchors: Tensor, num_anchors_per_level: Sequence[int],
        image_sizes: Tensor,
    ) -> list[dict[str, Tensor]]:
        """Detections per image, in the coordinates of the (resized, unpadded) network input.

        Args:
            cls_logits: (N, R, K).
            box_deltas: (N, R, 4).
            anchors: (R, 4).
            num_anchors_per_level: R_l of each level, summing to R.
            image_sizes: (N, 2) (h, w) of each image before padding; boxes are clipped to it.

        Returns:
            one dict per image: "boxes" (D, 4) XYXY float32, "scores" (D,), "labels" (D,) int64,
            sorted by decreasing score, D <= detections_per_img.
        """
        n, _, k = cls_logits.shape
        logits_all, anchor_idx_all, labels_all = [], [], []
        start = 0
        for count, logits in zip(num_anchors_per_level, cls_logits.split(list(num_anchors_per_level), dim=1)):
            top_logits, top_idx = top_pairs(logits, min(self.topk_candidates, count * k))  # (N, top)
            logits_all.append(top_logits)
            anchor_idx_all.append(torch.div(top_idx, k, rounding_mode="floor") + start)
            labels_all.append(top_idx % k)
            start += count
        # every candidate of an image, best first: (N, C)
        scores, order = torch.sigmoid(torch.cat(logits_all, dim=1).float()).sort(dim=1, descending=True, stable=True)
        anchor_idx = torch.cat(anchor_idx_all, dim=1).gather(1, order)  # (N, C)
        labels = torch.cat(labels_all, dim=1).gather(1, order)  # (N, C)

        deltas = torch.gather(box_deltas, 1, anchor_idx[..., None].expand(-1, -1, 4))  # (N, C, 4)
        boxes = self.box_coder.decode(deltas, anchors[anchor_idx])  # (N, C, 4) float32
        sizes = image_sizes.to(boxes)
        upper = torch.stack([sizes[:, 1], sizes[:, 0], sizes[:, 1], sizes[:, 0]], dim=1)[:, None, :]  # (N, 1, 4)
        boxes = torch.minimum(boxes.clamp(min=0), upper)
        return self._nms(boxes, scores, labels, k)

    def _nms(self, boxes: Tensor, scores: Tensor, labels: Tensor, k: int) -> list[dict[str, Tensor]]:
        """Class-wise NMS of each image's candidates, sorted best first: (N, C, 4), (N, C), (N, C); K classes."""
        n, c = scores.shape
        d = self.detections_per_img
        passing = (scores > self.score_thresh).sum(dim=1)  # (N,): a prefix of each row
        detections: list[dict[str, Tensor] | None] = [None] * n
        todo = torch.arange(n, device=scores.device)
        prefix = min(c, PREFIX_FACTOR * d)
        while len(todo):
            s = scores[todo, :prefix]  # (T, P)
            keep = s > self.score_thresh
            image = torch.arange(len(todo), device=s.device)[:, None].expand_as(s)[keep]
            flat_boxes, flat_scores, flat_labels = boxes[todo, :prefix][keep], s[keep], labels[todo, :prefix][keep]
            kept = class_wise_nms(flat_boxes, flat_scores, image * k + flat_labels, self.nms_thresh)
            kept_image = image[kept]  # by decreasing score within each image
            enough = torch.bincount(kept_image, minlength=len(todo)) >= d
            done = enough | (passing[todo] <= prefix) | (prefix >= c)
            for j in done.nonzero().flatten().tolist():
                sel = kept[kept_image == j][:d]
                detections[int(todo[j])] = {"boxes": flat_boxes[sel], "scores": flat_scores[sel],
                                            "labels": flat_labels[sel]}
            todo, prefix = todo[~done], min(c, prefix * PREFIX_FACTOR)
        return detections  # type: ignore[return-value]
