"""Images with boxes drawn on them (torchvision's draw_bounding_boxes): for predict, the training
logs and the evaluation report alike, so that plain inference needs no Lightning."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.utils import draw_bounding_boxes


def draw_boxes(image: torch.Tensor, boxes: torch.Tensor, colors: str | Sequence[str],
               labels: Sequence[str] | None = None, width: int = 1, font: str | None = None,
               font_size: int | None = None, filled_labels: bool = False) -> torch.Tensor:
    """(3, H, W) uint8 with ``boxes`` (B, 4) XYXY pixels drawn in ``colors`` (one, or one a box);
    ``font``: a TrueType file for the labels at ``font_size`` (default: PIL's small bitmap font);
    ``filled_labels``: black label text on a patch of the box's colour (readable on any picture)."""
    image = image.cpu()
    if len(boxes) == 0:
        return image
    colors = colors if isinstance(colors, str) else list(colors)
    return draw_bounding_boxes(image, boxes.cpu().float(), labels=None if labels is None else list(labels),
                               colors=colors, width=width, font=font, font_size=font_size,
                               fill_labels=filled_labels, label_colors="black" if filled_labels else None)


def draw_detections(image: torch.Tensor, det: dict, gt_boxes: torch.Tensor | None = None,
                    class_names: list[str] | None = None, min_score: float = 0.3) -> torch.Tensor:
    """(3, H, W) uint8 with true boxes in green and detections above min_score in red, labelled."""
    if gt_boxes is not None:
        image = draw_boxes(image, gt_boxes, "lime")
    keep = det["scores"] >= min_score
    boxes, scores, labels = det["boxes"][keep].cpu(), det["scores"][keep].cpu(), det["labels"][keep].cpu()
    names = [class_names[i] if class_names else str(int(i)) for i in labels.tolist()]
    text = [f"{n} {s:.2f}" for n, s in zip(names, scores.tolist())]
    return draw_boxes(image, boxes, "red", labels=text)
