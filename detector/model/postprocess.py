"""From head outputs to detections: per-level top-k, score threshold, decode, class-wise NMS, keep N.

Shape symbols: N images, R anchors, K classes, D detections per image.

The rule, as `detect_reference` writes it, image by image:
1. in each pyramid level, the topk_candidates best (anchor, class) scores (sigmoid of the logits);
2. of those, the ones above score_thresh;
3. their anchors' box deltas decoded into boxes, clipped to the image;
4. torchvision's batched_nms per class over the candidates of all levels;
5. the detections_per_img best that remain.

`fast_postprocess.detect_fast` gives the same detections batched over images, with a cheaper
top-k and an NMS that stops as soon as the kept boxes are decided; `PostProcessor` chooses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from .box_coder import BoxCoder
from .config import IMPLEMENTATIONS
from .fast_postprocess import detect_fast


def detect_reference(post: "PostProcessor", cls_logits: Tensor, box_deltas: Tensor, anchors: Tensor,
                     num_anchors_per_level: Sequence[int], image_sizes: Tensor) -> list[dict[str, Tensor]]:
    """The rule of the module doc; arguments and result as `PostProcessor.__call__`."""
    detections = []
    levels = list(num_anchors_per_level)
    for logits, deltas, (h, w) in zip(cls_logits, box_deltas, image_sizes.tolist()):
        boxes_all, scores_all, labels_all = [], [], []
        for lv_logits, lv_deltas, lv_anchors in zip(logits.split(levels), deltas.split(levels), anchors.split(levels)):
            k = lv_logits.shape[1]
            scores = torch.sigmoid(lv_logits.float()).flatten()  # (R_l * K,) anchor-major
            scores, idx = scores.topk(min(post.topk_candidates, scores.numel()))
            keep = scores > post.score_thresh
            scores, anchor_idx, labels = scores[keep], idx[keep] // k, idx[keep] % k
            boxes = post.box_coder.decode(lv_deltas[anchor_idx], lv_anchors[anchor_idx])  # (P, 4)
            boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h), boxes[:, 2].clamp(0, w),
                                 boxes[:, 3].clamp(0, h)], dim=1)
            boxes_all.append(boxes), scores_all.append(scores), labels_all.append(labels)
        boxes, scores, labels = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(labels_all)
        kept = batched_nms(boxes, scores, labels, post.nms_thresh)[: post.detections_per_img]
        detections.append({"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept]})
    return detections


class PostProcessor:
    """Args: score_thresh, topk_candidates (per level), nms_thresh, detections_per_img, box_coder;
    implementation: "reference" runs `detect_reference`, "fast" `fast_postprocess.detect_fast`."""

    def __init__(
        self, *, score_thresh: float = 0.05, topk_candidates: int = 1000, nms_thresh: float = 0.5,
        detections_per_img: int = 100, box_coder: BoxCoder | None = None, implementation: str = "fast",
    ) -> None:
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
        self.score_thresh = score_thresh
        self.topk_candidates = topk_candidates
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.box_coder = box_coder or BoxCoder()
        self.implementation = implementation

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
        detect = detect_reference if self.implementation == "reference" else detect_fast
        return detect(self, cls_logits, box_deltas, anchors, num_anchors_per_level, image_sizes)
