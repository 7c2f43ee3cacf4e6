"""Prediction on image files: detections as COCO-style JSON and pictures with the boxes drawn."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import load_detector, read_checkpoint
from .data.errors import DatasetError
from .data.images import load_rgb_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(source: str | os.PathLike) -> list[Path]:
    """The image files of a folder (sorted), or [source] for one file."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(source, f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return files
    if not source.exists():
        raise DatasetError(source, "no such file or folder")
    return [source]


def predict_paths(checkpoint, source, out_dir, *, min_score: float = 0.3, batch_size: int = 4,
                  device: str = "cpu", draw: bool = True, class_names: list[str] | None = None) -> Path:
    """Runs the model on every image of `source`; returns the path of the JSON it wrote."""
    from .drawing import draw_detections

    model = load_detector(checkpoint, map_location=device)
    if class_names is None:
        class_names = read_checkpoint(checkpoint).get("class_names")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = list_images(source)
    results = []
    for start in tqdm(range(0, len(files), batch_size), desc="predict", unit="batch"):
        chunk = files[start : start + batch_size]
        arrays = [load_rgb_image(p) for p in chunk]
        images = [torch.from_numpy(a).permute(2, 0, 1).float().div_(255) for a in arrays]
        for path, array, det in zip(chunk, arrays, model.predict(images)):
            keep = det["scores"] >= min_score
            boxes, scores, labels = det["boxes"][keep].cpu(), det["scores"][keep].cpu(), det["labels"][keep].cpu()
            xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
            for b, s, l in zip(xywh.tolist(), scores.tolist(), labels.tolist()):
                name = class_names[l] if class_names else None
                results.append({"file_name": path.name, "bbox": [round(v, 2) for v in b], "score": round(s, 4),
                                "label": l, **({"category": name} if name else {})})
            if draw:
                from PIL import Image

                canvas = draw_detections(torch.from_numpy(array).permute(2, 0, 1).contiguous(),
                                         {"boxes": boxes, "scores": scores, "labels": labels}, None,
                                         class_names, min_score)
                Image.fromarray(canvas.permute(1, 2, 0).numpy()).save(out_dir / f"{path.stem}.png")
    out = out_dir / "detections.json"
    out.write_text(json.dumps(results, indent=1))
    return out
