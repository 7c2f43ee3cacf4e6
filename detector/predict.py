"""Prediction on image files: detections as COCO-style JSON and pictures with the boxes drawn.

On a folder, an unreadable file is skipped with a warning naming it (on stderr), the others are
predicted, and a final line gives the counts; it is an error only when no image could be read, or
with strict=True at the first unreadable one. A single file given directly must be readable.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import load_detector, read_checkpoint
from .data.errors import DatasetError
from .data.images import IMAGE_SUFFIXES, load_rgb_image
from .model.preprocess import ImageTooThinError, resized_size


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


def _read_images(paths: list[Path], strict: bool, min_size: int, max_size: int) -> tuple[list[Path], list]:
    """(the readable paths, their (H, W, 3) arrays); the others (unreadable, or too thin to resize at
    min_size / max_size) warned about, or an error when strict."""
    kept, arrays = [], []
    for path in paths:
        try:
            array = load_rgb_image(path)
            if min_size is not None:  # too thin to resize: skipped like an unreadable file
                resized_size(*array.shape[:2], min_size, max_size)
            arrays.append(array)
        except ImageTooThinError as err:
            if strict:
                raise DatasetError(path, str(err)) from None
            tqdm.write(f"warning: {path}: {err}; skipped", file=sys.stderr)
            continue
        except DatasetError as err:
            if strict:
                raise
            tqdm.write(f"warning: {err}; skipped", file=sys.stderr)  # above the progress bar, not inside it
            continue
        kept.append(path)
    return kept, arrays


def predict_paths(checkpoint, source, out_dir, *, min_score: float = 0.3, batch_size: int = 4,
                  device: str = "cpu", draw: bool = True, class_names: list[str] | None = None,
                  onnx=None, strict: bool = False) -> Path:
    """Runs the model (a checkpoint, or with onnx= an exported .onnx file) on every image of `source`;
    returns the path of the JSON it wrote.

    strict: a folder's unreadable file is an error instead of a warning (see the module doc).
    """
    from .drawing import draw_detections

    if onnx is not None:
        from .export.runtime import OnnxDetector

        model = OnnxDetector(onnx, device=device)  # same predict() contract as the eager model
        class_names = class_names or model.class_names
        sizes = model.min_size, model.max_size  # None for a file exported without them
    else:
        model = load_detector(checkpoint, map_location=device)
        if class_names is None:
            class_names = read_checkpoint(checkpoint).get("class_names")
        sizes = model.config.min_size, model.config.max_size
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = list_images(source)
    strict = strict or not Path(source).is_dir()
    results, predicted = [], 0
    for start in tqdm(range(0, len(files), batch_size), desc="predict", unit="batch"):
        chunk, arrays = _read_images(files[start : start + batch_size], strict, *sizes)
        if not chunk:
            continue
        predicted += len(chunk)
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
    if predicted == 0:
        raise DatasetError(source, f"none of the {len(files)} images could be read")
    out = out_dir / "detections.json"
    out.write_text(json.dumps(results, indent=1))
    if len(files) > 1:
        skipped = len(files) - predicted
        print(f"predicted {predicted} of {len(files)} images" + (f", {skipped} unreadable skipped" if skipped else ""),
              file=sys.stderr)
    return out
