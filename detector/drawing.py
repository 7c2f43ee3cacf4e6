"""Images with boxes drawn on them (torchvision's draw_bounding_boxes): for predict and for the
training logs alike, so that plain inference needs no Lightning."""

from __future__ import annotations

import torch
from torchvision.utils import draw_bounding_boxes


def draw_detections(image: torch.Tensor, det: dict, gt_boxes: torch.Tensor | None = None,
                    class_names: list[str] | None = None, min_score: float = 0.3) -> torch.Tensor:
    """(3, H, W) uint8 with true boxes in green and detections above min_score in red, labelled."""
    image = image.cpu()
    if gt_boxes is not None and len(gt_boxes):
        image = draw_bounding_boxes(image, gt_boxes.cpu(), colors="lime", width=1)
    keep = det["scores"] >= min_score
    boxes, scores, labels = det["boxes"][keep].cpu(), det["scores"][keep].cpu(), det["labels"][keep].cpu()
    if len(boxes):
        names = [class_names[i] if class_names else str(int(i)) for i in labels.tolist()]
        text = [f"{n} {s:.2f}" for n, s in zip(names, scores.tolist())]
        image = draw_bounding_boxes(image, boxes, labels=text, colors="red", width=1)
    return image
