"""Prediction on image files: detections as COCO-style JSON and pictures with the boxes drawn.

On a folder, an unreadable file (or one the model cannot take, e.g. too thin to resize) is skipped
with a warning naming it (on stderr), the others are predicted, and a final line gives the counts;
it is an error only when no image could be read, or with strict=True at the first bad one. A
single file given directly must be readable.

Nothing given is overwritten: the drawing of `holiday.png` is `OUT/holiday.png.png` (the full file
name, so `scan.jpg` and `scan.png` get one each), and a run whose outputs would replace one of its
inputs is refused before any work. When a run fails part-way, detections.json still holds the
images predicted before the failure.

Memory: an image more than `SHRINK_FACTOR` times the model's input size on a side is shrunk as
uint8 (antialiased) to twice that size before it becomes float, so the float copies of one image
are bounded by its resized size; the decode itself is bounded by Pillow's pixel limit
(`PIL.Image.MAX_IMAGE_PIXELS` x 2, about 179 Mpx: larger files are refused as decompression bombs).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import checkpoint_class_names, load_detector
from .data.errors import DatasetError
from .data.images import IMAGE_SUFFIXES, load_rgb_image
from .io import ensure_writable_folder, write_atomic, writing
from .model.preprocess import ImageTooThinError, resized_size

DETECTIONS_FILE = "detections.json"
#: an image larger than this many times the model's resized size (per side) is shrunk as uint8 first
SHRINK_FACTOR = 4


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


def drawing_path(out_dir: Path, image: Path) -> Path:
    """Where the drawing of `image` goes: the full file name plus .png, unique per input file name."""
    return out_dir / f"{image.name}.png"


def _refuse_overwriting_inputs(files: list[Path], out_dir: Path, draw: bool) -> None:
    """`DatasetError` when an output path of this run is one of its input files (checked before any work)."""
    inputs = {p.resolve() for p in files}
    outputs = [out_dir / DETECTIONS_FILE] + ([drawing_path(out_dir, p) for p in files] if draw else [])
    for out in outputs:
        if out.resolve() in inputs:
            raise DatasetError(out, "is an input image and would be overwritten by this run's output; "
                                    "choose another --out folder")


def _model_input(array, sizes: tuple[int | None, int | None]) -> torch.Tensor:
    """(3, h, w) float in [0, 1] of an (H, W, 3) uint8 image; one more than SHRINK_FACTOR times its
    resized size (the one size rule at sizes = (min_size, max_size)) is shrunk as uint8 to twice
    that size first (see the module doc), so (h, w) may be smaller than (H, W)."""
    image = torch.from_numpy(array).permute(2, 0, 1)
    h, w = image.shape[-2:]
    if sizes[0] is not None:  # None: an ONNX file exported without its sizes
        rh, rw = resized_size(h, w, *sizes)
        if h > SHRINK_FACTOR * rh:
            from torchvision.transforms.v2.functional import resize

            image = resize(image, [2 * rh, 2 * rw], antialias=True)
    return image.float().div_(255)


def _predict_chunk(model, chunk: list[Path], arrays: list, strict: bool,
                   sizes: tuple[int | None, int | None]) -> list[tuple[Path, object, dict]]:
    """[(path, array, detections in the file's pixels)] of a chunk; an image the model cannot take
    is skipped with a warning (an error when strict), the others are still predicted."""
    from .model.retinanet import rescale_boxes

    images = [_model_input(a, sizes) for a in arrays]
    try:
        detections = model.predict(images)
    except (ValueError, RuntimeError) as err:  # one image of the batch may be the cause: one by one
        if len(chunk) > 1:
            return [row for i in range(len(chunk)) for row in _predict_chunk(model, chunk[i:i + 1], arrays[i:i + 1], strict, sizes)]
        why = f"cannot predict this image ({_first_line(err)})"
        if strict:
            raise DatasetError(chunk[0], why) from None
        tqdm.write(f"warning: {chunk[0]}: {why}; skipped", file=sys.stderr)
        return []
    for det, image, array in zip(detections, images, arrays):
        if image.shape[-2:] != array.shape[:2]:
            det["boxes"] = rescale_boxes(det["boxes"], from_size=image.shape[-2:], to_size=array.shape[:2])
    return list(zip(chunk, arrays, detections))


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _read_images(paths: list[Path], strict: bool, min_size: int | None,
                 max_size: int | None) -> tuple[list[Path], list]:
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
    returns the path of the JSON it wrote (OUT/detections.json; drawings OUT/<file name>.png).

    strict: a folder's bad file is an error instead of a warning (see the module doc).
    """
    if onnx is not None:
        from .export.runtime import OnnxDetector

        model = OnnxDetector(onnx, device=device)  # same predict() contract as the eager model
        class_names = class_names or model.class_names
        sizes = model.min_size, model.max_size  # None for a file exported without them
    else:
        model = load_detector(checkpoint, map_location=device)
        if class_names is None:
            class_names = checkpoint_class_names(checkpoint, model.num_classes)
        sizes = model.config.min_size, model.config.max_size
    out_dir = Path(out_dir)
    files = list_images(source)
    _refuse_overwriting_inputs(files, out_dir, draw)
    ensure_writable_folder(out_dir)
    strict = strict or not Path(source).is_dir()
    out = out_dir / DETECTIONS_FILE
    results, predicted, done = [], 0, False
    try:
        for start in tqdm(range(0, len(files), batch_size), desc="predict", unit="batch"):
            chunk, arrays = _read_images(files[start : start + batch_size], strict, *sizes)
            if not chunk:
                continue
            for path, array, det in _predict_chunk(model, chunk, arrays, strict, sizes):
                predicted += 1
                boxes, scores, labels = _kept(det, min_score)
                results += _results_rows(path, boxes, scores, labels, class_names)
                if draw:
                    _draw(drawing_path(out_dir, path), array, boxes, scores, labels, class_names, min_score)
        if predicted == 0:
            raise DatasetError(source, f"none of the {len(files)} images could be read")
        done = True
    finally:
        if not done and predicted:  # a later image failed: keep what was predicted before it
            with writing(out):
                write_atomic(out, json.dumps(results, indent=1))
            tqdm.write(f"warning: stopped after {predicted} of {len(files)} images; their detections are kept in "
                       f"{out}", file=sys.stderr)
    with writing(out):
        write_atomic(out, json.dumps(results, indent=1))
    if len(files) > 1:
        skipped = len(files) - predicted
        print(f"predicted {predicted} of {len(files)} images" + (f", {skipped} unreadable skipped" if skipped else ""),
              file=sys.stderr)
    return out


def _kept(det: dict, min_score: float):
    """(boxes (D, 4), scores (D,), labels (D,)) on the CPU of the detections scoring min_score or more."""
    keep = det["scores"] >= min_score
    return det["boxes"][keep].cpu(), det["scores"][keep].cpu(), det["labels"][keep].cpu()


def _results_rows(path: Path, boxes, scores, labels, class_names) -> list[dict]:
    """COCO-style result rows (bbox XYWH) of one image's kept detections."""
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
    rows = []
    for b, s, l in zip(xywh.tolist(), scores.tolist(), labels.tolist()):
        name = class_names[l] if class_names else None
        rows.append({"file_name": path.name, "bbox": [round(v, 2) for v in b], "score": round(s, 4), "label": l,
                     **({"category": name} if name else {})})
    return rows


def _draw(target: Path, array, boxes, scores, labels, class_names, min_score: float) -> None:
    from PIL import Image

    from .drawing import draw_detections

    canvas = draw_detections(torch.from_numpy(array).permute(2, 0, 1).contiguous(),
                             {"boxes": boxes, "scores": scores, "labels": labels}, None, class_names, min_score)
    with writing(target):
        Image.fromarray(canvas.permute(1, 2, 0).numpy()).save(target)
