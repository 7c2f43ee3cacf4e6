"""From head outputs to detections: score threshold, per-level top-k, decode, class-wise NMS.

Shape symbols: N images, R anchors, K classes, L levels, C candidates per image.

Batched over images: thresholding and top-k run on (N, R_l * K) per level, decoding on (N, C, 4),
and one torchvision batched_nms call covers every image and class at once (the NMS group of a
candidate is image * K + class). Only the final split into per-image dicts loops over images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from .box_coder import BoxCoder


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
        scores_all, anchor_idx_all, labels_all = [], [], []
        start = 0
        for count, logits in zip(num_anchors_per_level, cls_logits.split(list(num_anchors_per_level), dim=1)):
            scores = torch.sigmoid(logits.float()).flatten(1)  # (N, R_l * K)
            top = min(self.topk_candidates, scores.shape[1])
            top_scores, top_idx = scores.topk(top, dim=1)  # (N, top), sorted
            scores_all.append(top_scores)
            anchor_idx_all.append(torch.div(top_idx, k, rounding_mode="floor") + start)
            labels_all.append(top_idx % k)
            start += count
        scores = torch.cat(scores_all, dim=1)  # (N, C)
        anchor_idx = torch.cat(anchor_idx_all, dim=1)  # (N, C)
        labels = torch.cat(labels_all, dim=1)  # (N, C)

        deltas = torch.gather(box_deltas, 1, anchor_idx[..., None].expand(-1, -1, 4))  # (N, C, 4)
        boxes = self.box_coder.decode(deltas, anchors[anchor_idx])  # (N, C, 4) float32
        sizes = image_sizes.to(boxes)
        upper = torch.stack([sizes[:, 1], sizes[:, 0], sizes[:, 1], sizes[:, 0]], dim=1)[:, None, :]  # (N, 1, 4)
        boxes = torch.minimum(boxes.clamp(min=0), upper)

        keep = scores > self.score_thresh  # (N, C): top-k first, then threshold = threshold, then top-k
        image_idx = torch.arange(n, device=scores.device)[:, None].expand_as(scores)[keep]
        flat_boxes, flat_scores, flat_labels = boxes[keep], scores[keep], labels[keep]
        kept = batched_nms(flat_boxes, flat_scores, image_idx * k + flat_labels, self.nms_thresh)
        kept_image = image_idx[kept]  # sorted by decreasing score within each image

        detections = []
        for i in range(n):
            sel = kept[kept_image == i][: self.detections_per_img]
            detections.append({"boxes": flat_boxes[sel], "scores": flat_scores[sel], "labels": flat_labels[sel]})
        return detections
