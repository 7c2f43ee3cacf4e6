"""The worst images: ranked by their TIDE errors weighted by type, drawn with each error coloured.

An error type's weight is the AP gained by fixing that type divided by its count (the AP one such
error costs on average), so an image's weight estimates the AP its errors cost; when fixing
nothing gains AP every error weighs 1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from matplotlib import font_manager

from ..drawing import draw_boxes
from .figures import ERROR_COLORS, GROUND_TRUTH_COLOR, TRUE_POSITIVE_COLOR
from .tide import ERROR_TYPES, TideResult

_MIN_SIDE = 512  # smaller images are enlarged (nearest neighbour) so that boxes and labels read
_FONT_SIZE = 13


def error_weights(tide: TideResult) -> dict[str, float]:
    """{type: AP gained by fixing the type / its count}, or 1 for every type when no fix gains AP."""
    if not any(tide.delta_ap[t] > 0 for t in ERROR_TYPES):
        return {t: 1.0 for t in ERROR_TYPES}
    return {t: (tide.delta_ap[t] / tide.counts[t] if tide.counts[t] else 0.0) for t in ERROR_TYPES}


def worst_images(tide: TideResult, weights: Mapping[str, float], count: int) -> list[dict[str, Any]]:
    """The ``count`` images of largest weighted error sum (ties: smaller image id first), each
    {"image_id", "weighted_errors", "errors": {type: count}}; images without error are left out."""
    per_image: dict[int, Counter] = {}
    for e in tide.errors:
        per_image.setdefault(e.image_id, Counter())[e.type] += 1
    rows = [{"image_id": image_id, "weighted_errors": sum(weights[t] * n for t, n in c.items()),
             "errors": {t: c.get(t, 0) for t in ERROR_TYPES}} for image_id, c in per_image.items()]
    rows.sort(key=lambda r: (-r["weighted_errors"], r["image_id"]))
    return [r for r in rows if r["weighted_errors"] > 0][:count]


def draw_errors(image: torch.Tensor, image_id: int, coco_gt: Any, results: Sequence[Mapping[str, Any]],
                tide: TideResult, class_names: Mapping[int, str], min_score: float) -> torch.Tensor:
    """(3, H', W') uint8: ``image`` (3, H, W) uint8 with its ground truth (white, missed boxes in
    the "miss" colour), its true positives and its erroneous detections in their type's colour;
    detections below ``min_score`` are not drawn (missed boxes always are)."""
    scale = max(1, -(-_MIN_SIDE // max(1, min(image.shape[1:]))))  # ceil
    if scale > 1:
        image = torch.nn.functional.interpolate(image[None].float(), scale_factor=scale, mode="nearest")[0].byte()
    missed = {e.gt_id for e in tide.errors if e.image_id == image_id and e.type == "miss"}
    boxes, colors, labels, widths = [], [], [], []

    def add(xywh, color, label, width):
        x, y, w, h = (float(v) * scale for v in xywh)
        boxes.append([x, y, x + w, y + h])
        colors.append(color)
        labels.append(label)
        widths.append(width)

    for a in coco_gt.imgToAnns.get(image_id, []):
        if a["id"] in missed:
            add(a["bbox"], ERROR_COLORS["miss"], f"missed {class_names.get(a['category_id'], '?')}", 2)
        else:
            add(a["bbox"], GROUND_TRUTH_COLOR, None, 1)
    for i in tide.true_positives.get(image_id, []):
        r = results[i]
        if r["score"] >= min_score:
            add(r["bbox"], TRUE_POSITIVE_COLOR, None, 1)
    for e in tide.errors:
        if e.image_id == image_id and e.det is not None and results[e.det]["score"] >= min_score:
            r = results[e.det]
            add(r["bbox"], ERROR_COLORS[e.type], f"{e.type} {class_names.get(r['category_id'], '?')} {r['score']:.2f}", 2)
    font = font_manager.findfont("DejaVu Sans")  # matplotlib ships it: readable labels with no system font
    for width in sorted(set(widths)):  # thin boxes first, error boxes on top
        idx = [i for i, w in enumerate(widths) if w == width]
        text = [labels[i] or "" for i in idx]
        image = draw_boxes(image, torch.tensor([boxes[i] for i in idx]).reshape(-1, 4), [colors[i] for i in idx],
                           labels=text if any(text) else None, width=width, font=font, font_size=_FONT_SIZE,
                           filled_labels=True)
    return image
