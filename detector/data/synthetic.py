"""A synthetic COCO-format dataset where foreground/background imbalance matters.

Each image (default 256 x 256) holds many SMALL shapes (8..48 px, Poisson count with mean 8,
at most 20; 5 % of the images are empty) of five classes at unequal frequencies, on a
cluttered background: a colour gradient, low-contrast blobs, random lines, pixel noise, and
distractors that look like objects but belong to no class (hexagon outlines, elongated
ellipses, half discs, open arcs, bars): the hard negatives.

| label | name     | frequency | look                                     |
|-------|----------|-----------|------------------------------------------|
| 0     | circle   | 40 %      | filled disc                              |
| 1     | square   | 25 %      | filled square, rotated by up to +-20 deg  |
| 2     | triangle | 15 %      | filled triangle, any rotation            |
| 3     | cross    | 12 %      | filled plus sign, rotated by up to +-20 deg |
| 4     | ring     |  8 %      | circle outline                           |

Boxes are tight: every shape is rasterised into its own mask and its box is the mask's pixel
extent, (x0, y0, x1 + 1, y1 + 1) for the inclusive extent x0..x1. Shapes of the classes never
overlap each other (each lies in its own square, with a 1 px gap), so no box loses a part to
occlusion; distractors and clutter are drawn underneath, except a few thin lines on top.

The imbalance knob `canvas` (default 1) pads every image to canvas x its side with a plain
colour, the mean of that image's own background gradient (no clutter, no noise), the image at the
top left: the same seed gives the same pixels inside and the same boxes, labels and ids, while the
background anchors grow about canvas^2 times. The COCO width and height are the canvas's.

Everything is drawn with numpy and PIL.ImageDraw from a numpy Generator seeded by
(seed, split, image index), so a dataset is the same on every run and any image can be made
alone. Layout written by `make_synthetic(out)`:
    {out}/train.json, {out}/val.json             COCO instances, category ids 1..5
    {out}/images/train/000000.jpg ...            file_name relative to {out}/images
    {out}/images/val/000000.jpg ...
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from detector.io import write_atomic

SYNTHETIC_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring")
CLASS_FREQUENCIES: tuple[float, ...] = (0.40, 0.25, 0.15, 0.12, 0.08)
DISTRACTOR_KINDS: tuple[str, ...] = ("hexagon", "ellipse", "half_disc", "arc", "bar")
SPLITS: tuple[str, ...] = ("train", "val")


def _knob(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class SyntheticSpec:
    """The difficulty knobs: the one table of the generator's settings (each field's "help" is
    what scripts/make_synthetic.py shows; `make_synthetic` takes them as keywords)."""

    image_size: int = _knob(256, "side of the square images, px")
    mean_objects: float = _knob(8.0, "mean of the Poisson number of objects of a non-empty image")
    max_objects: int = _knob(20, "most objects per image (fewer when they do not fit)")
    min_object_size: int = _knob(8, "smallest side of an object's square, px (drawn log-uniformly)")
    max_object_size: int = _knob(48, "largest side of an object's square, px")
    num_distractors: float = _knob(8.0, "mean of the Poisson number of distractors (hard negatives) per image")
    num_lines: float = _knob(10.0, "mean clutter lines per image (a tenth as many again cross the objects)")
    num_blobs: float = _knob(6.0, "mean low-contrast background blobs per image")
    noise_std: float = _knob(8.0, "standard deviation of the additive pixel noise (0-255)")
    empty_fraction: float = _knob(0.05, "probability that an image has no object at all")
    min_contrast: int = _knob(120, "least sum of absolute RGB differences between an object and the background")
    jpeg_quality: int = _knob(90, "JPEG quality of the written images")
    canvas: int = _knob(1, "pad each image to canvas x its side with its plain background colour, image at the "
                           "top left (the same objects, more background anchors)")

    def __post_init__(self) -> None:
        if not 4 <= self.min_object_size <= self.max_object_size < self.image_size:
            raise ValueError(
                "need 4 <= min_object_size <= max_object_size < image_size, got "
                f"{self.min_object_size}, {self.max_object_size}, {self.image_size}"
            )
        if self.mean_objects < 0 or self.max_objects < 0 or self.num_distractors < 0 or self.noise_std < 0:
            raise ValueError("object/distractor counts and noise_std must be >= 0")
        if not 0.0 <= self.empty_fraction <= 1.0:
            raise ValueError(f"empty_fraction must be in [0, 1], got {self.empty_fraction}")
        if self.canvas < 1:
            raise ValueError(f"canvas must be >= 1, got {self.canvas}")


# --------------------------------------------------------------------------------------------
# Shapes, each rasterised into an "L" mask of side s + 2 (255 inside the shape).


def _rotate(points: np.ndarray, angle: float, center: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    rel = points - center
    return np.stack([rel[:, 0] * c - rel[:, 1] * s, rel[:, 0] * s + rel[:, 1] * c], axis=1) + center


def _polygon(draw: ImageDraw.ImageDraw, points: np.ndarray, **kwargs: Any) -> None:
    draw.polygon([tuple(p) for p in points.tolist()], **kwargs)


def _shape_mask(kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    """The mask of one shape (class or distractor) drawn in a (size + 2)^2 canvas."""
    side = size + 2
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    lo, hi = 1, size  # the shape fits in [1, size] x [1, size]
    center = (lo + hi) / 2
    if kind == "circle":
        draw.ellipse([lo, lo, hi, hi], fill=255)
    elif kind == "square":
        side_len = (hi - lo) / math.sqrt(2) if size >= 12 else hi - lo  # room to rotate
        half = side_len / 2
        corners = np.array([[-half, -half], [half, -half], [half, half], [-half, half]]) + center
        angle = rng.uniform(-20, 20) * math.pi / 180 if size >= 12 else 0.0
        _polygon(draw, _rotate(corners, angle, center), fill=255)
    elif kind == "triangle":
        r = (hi - lo) / 2
        angles = rng.uniform(0, 2 * math.pi) + np.array([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
        points = np.stack([center + r * np.cos(angles), center + r * np.sin(angles)], axis=1)
        _polygon(draw, points, fill=255)
    elif kind == "cross":
        half = (hi - lo) / 2 / (1.15 if size >= 12 else 1.0)
        arm = max(half / 3, 1.0)
        q = np.array(
            [[-arm, -half], [arm, -half], [arm, -arm], [half, -arm], [half, arm], [arm, arm],
             [arm, half], [-arm, half], [-arm, arm], [-half, arm], [-half, -arm], [-arm, -arm]]
        )  # fmt: skip
        angle = rng.uniform(-20, 20) * math.pi / 180 if size >= 12 else 0.0
        _polygon(draw, _rotate(q + center, angle, center), fill=255)
    elif kind == "ring":
        draw.ellipse([lo, lo, hi, hi], outline=255, width=max(2, size // 6))
    elif kind == "hexagon":
        r = (hi - lo) / 2
        rotation = float(rng.uniform(0, 60))
        draw.regular_polygon((center, center, r), 6, rotation=rotation, outline=255, width=max(2, size // 8))
    elif kind == "ellipse":
        minor = rng.uniform(0.25, 0.55) * (hi - lo)
        if rng.random() < 0.5:
            draw.ellipse([lo, center - minor / 2, hi, center + minor / 2], fill=255)
        else:
            draw.ellipse([center - minor / 2, lo, center + minor / 2, hi], fill=255)
    elif kind == "half_disc":
        start = float(rng.uniform(0, 360))
        draw.chord([lo, lo, hi, hi], start, start + 180, fill=255)
    elif kind == "arc":
        start = float(rng.uniform(0, 360))
        draw.arc([lo, lo, hi, hi], start, start + rng.uniform(200, 280), fill=255, width=max(2, size // 6))
    elif kind == "bar":
        half_len, half_w = (hi - lo) / 2, max((hi - lo) / 2 * rng.uniform(0.12, 0.25), 1.0)
        q = np.array([[-half_len, -half_w], [half_len, -half_w], [half_len, half_w], [-half_len, half_w]])
        _polygon(draw, _rotate(q * 0.95 + center, rng.uniform(0, math.pi), center), fill=255)
    else:
        raise ValueError(f"unknown shape {kind!r}")
    return mask


# --------------------------------------------------------------------------------------------
# One image.


class SyntheticRenderer:
    """Draws synthetic images for one `SyntheticSpec`; holds a bank of noise to crop from.

    Args:
        spec: the difficulty knobs.
        seed: seed of the noise bank (image content comes from the per-image Generator).
    """

    def __init__(self, spec: SyntheticSpec, seed: int = 0) -> None:
        self.spec = spec
        s = spec.image_size
        bank_rng = np.random.default_rng([seed, 7919])
        self.noise = (bank_rng.standard_normal((2 * s, 2 * s, 3), dtype=np.float32) * spec.noise_std).astype(np.int16)
        # The gradient is linear: compute it on a coarse grid and let PIL upsample it.
        self._grid = max(8, s // 8)
        ys, xs = np.mgrid[0 : self._grid, 0 : self._grid].astype(np.float32) / (self._grid - 1)
        self._xs, self._ys = xs, ys

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """(G, G, 3) float32 coarse gradient between two random colours, random direction."""
        c0, c1 = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
        theta = rng.uniform(0, 2 * math.pi)
        t = self._xs * math.cos(theta) + self._ys * math.sin(theta)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        return c0 + (c1 - c0) * t[:, :, None]

    def _under(self, background: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """(3,) mean background colour over the image region [x0, x1) x [y0, y1)."""
        g, s = self._grid, self.spec.image_size
        gx0 = min(max(int(x0) * g // s, 0), g - 1)
        gy0 = min(max(int(y0) * g // s, 0), g - 1)
        gx1 = min(max(-(-int(x1) * g // s), gx0 + 1), g)
        gy1 = min(max(-(-int(y1) * g // s), gy0 + 1), g)
        return background[gy0:gy1, gx0:gx1].mean(axis=(0, 1))

    def _colors_far_from(self, rng: np.random.Generator, under: np.ndarray) -> list[tuple[int, int, int]]:
        """One random colour per row of `under` (n, 3), each at L1 distance >= min_contrast from it."""
        n = len(under)
        candidates = rng.integers(0, 256, size=(n, 8, 3))
        far = np.abs(candidates - under[:, None, :]).sum(axis=2) >= self.spec.min_contrast  # (n, 8)
        chosen = candidates[np.arange(n), far.argmax(axis=1)]  # the first far candidate
        fallback = np.where(under > 127, 30, 225)  # dark on bright, bright on dark
        chosen = np.where(far.any(axis=1)[:, None], chosen, fallback)
        return [tuple(int(v) for v in c) for c in chosen]

    def render(self, rng: np.random.Generator, instances: bool = False) -> tuple[np.ndarray, ...]:
        """One image: (C, C, 3) uint8 RGB, boxes (M, 4) float32 XYXY, labels (M,) int64, where
        C = canvas x S: the S x S image at the top left, the rest its plain background colour.

        With `instances=True` a fourth array comes back: (C, C) int32, k + 1 on the pixels of
        object k and 0 elsewhere (for tests and for checking that boxes are tight).

        Random numbers are drawn in blocks (one call per kind of thing) to keep the Python
        overhead per image small.
        """
        spec = self.spec
        s = spec.image_size
        background = self._background(rng)  # coarse (G, G, 3)
        image = Image.fromarray(background.astype(np.uint8)).resize((s, s), Image.Resampling.BILINEAR)
        draw = ImageDraw.Draw(image)
        log_lo, log_hi = math.log(spec.min_object_size), math.log(spec.max_object_size)

        # Clutter: low-contrast blobs, then lines.
        n = int(rng.poisson(spec.num_blobs))
        blobs = rng.random((n, 4)) * [0.2 * s, s, s, 1.0] + [0.05 * s, 0, 0, 0.5]  # radius, cx, cy, aspect
        shifts = rng.normal(0, 25, size=(n, 3))
        for (r, cx, cy, aspect), shift in zip(blobs.tolist(), shifts):
            under = self._under(background, cx, cy, cx + 1, cy + 1)
            color = tuple(int(v) for v in np.clip(under + shift, 0, 255))
            draw.ellipse([cx - r, cy - r * aspect, cx + r, cy + r], fill=color)
        n = int(rng.poisson(spec.num_lines))
        ends = rng.uniform(-0.1 * s, 1.1 * s, size=(n, 4)).tolist()
        colors = rng.integers(0, 256, size=(n, 3)).tolist()
        for xy, color, width in zip(ends, colors, rng.integers(1, 4, size=n).tolist()):
            draw.line(xy, fill=tuple(color), width=width)

        # Distractors (hard negatives), anywhere, under the objects.
        n = int(rng.poisson(spec.num_distractors))
        dist_lo = max(math.log(12), log_lo)
        sizes = np.minimum(np.round(np.exp(rng.uniform(dist_lo, max(dist_lo, log_hi) + 0.2, size=n))), s - 2)
        sizes = sizes.astype(np.int64)
        kinds = rng.integers(len(DISTRACTOR_KINDS), size=n).tolist()
        corners = (rng.random((n, 2)) * (s - sizes[:, None] // 3) - sizes[:, None] // 3).astype(np.int64)
        unders = np.array([self._under(background, x, y, x + z, y + z) for (x, y), z in zip(corners.tolist(), sizes.tolist())])
        colors = self._colors_far_from(rng, unders.reshape(-1, 3))
        for (x, y), size, kind, color in zip(corners.tolist(), sizes.tolist(), kinds, colors):
            image.paste(color, (x - 1, y - 1), _shape_mask(DISTRACTOR_KINDS[kind], size, rng))

        # Objects: non-overlapping squares, then the shape's exact extent as its box.
        count = 0 if rng.random() < spec.empty_fraction else min(int(rng.poisson(spec.mean_objects)), spec.max_objects)
        labels_drawn = rng.choice(len(SYNTHETIC_CLASSES), size=count, p=CLASS_FREQUENCIES).tolist()
        sizes = np.round(np.exp(rng.uniform(log_lo, log_hi, size=count))).astype(np.int64)
        tries = rng.random((count, 20, 2))  # up to 20 positions per object
        placed = np.zeros((count, 4), dtype=np.int64)  # squares taken, XYXY with a 1 px gap
        taken = 0
        boxes, labels, slots = [], [], []
        for k in range(count):
            size = int(sizes[k])
            candidates = 1 + (tries[k] * (s - size - 2)).astype(np.int64)  # (20, 2) top-left corners
            lo, hi = candidates - 1, candidates + size + 1  # (20, 2) each
            free = ~(
                (placed[None, :taken, 0] < hi[:, None, 0]) & (lo[:, None, 0] < placed[None, :taken, 2])
                & (placed[None, :taken, 1] < hi[:, None, 1]) & (lo[:, None, 1] < placed[None, :taken, 3])
            ).any(axis=1)  # fmt: skip
            if not free.any():
                continue  # no room left for this one
            x, y = (int(v) for v in candidates[int(free.argmax())])
            placed[taken] = (x - 1, y - 1, x + size + 1, y + size + 1)
            taken += 1
            slots.append((x, y, size, labels_drawn[k]))
        unders = np.array([self._under(background, x, y, x + z, y + z) for x, y, z, _ in slots]).reshape(-1, 3)
        instance_map = Image.new("I", (s, s), 0) if instances else None
        for (x, y, size, label), color in zip(slots, self._colors_far_from(rng, unders)):
            mask = _shape_mask(SYNTHETIC_CLASSES[label], size, rng)
            extent = mask.getbbox()  # (x0, y0, x1 + 1, y1 + 1) of the nonzero pixels
            if extent is None:
                continue
            image.paste(color, (x - 1, y - 1), mask)
            if instance_map is not None:
                instance_map.paste(len(boxes) + 1, (x - 1, y - 1), mask)
            boxes.append((x - 1 + extent[0], y - 1 + extent[1], x - 1 + extent[2], y - 1 + extent[3]))
            labels.append(label)

        # A few thin lines on top: they cross shapes without changing their extent.
        n = int(rng.poisson(spec.num_lines / 10))
        for xy, color in zip(rng.uniform(0, s, size=(n, 4)).tolist(), rng.integers(0, 256, size=(n, 3)).tolist()):
            draw.line(xy, fill=tuple(color), width=1)

        pixels = np.asarray(image, dtype=np.int16)
        if spec.noise_std > 0:
            oy, ox = rng.integers(0, s, size=2)
            pixels = pixels + self.noise[oy : oy + s, ox : ox + s]
        pixels = np.clip(pixels, 0, 255).astype(np.uint8)
        instance_map = None if instance_map is None else np.asarray(instance_map, dtype=np.int32)
        if spec.canvas > 1:  # drawn after every random draw, so the image inside is canvas 1's
            pixels = _on_canvas(pixels, spec.canvas, plain_colour(background))
            instance_map = None if instance_map is None else _on_canvas(instance_map, spec.canvas, 0)
        out = (pixels, np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64).reshape(-1))
        return out if instance_map is None else (*out, instance_map)


def plain_colour(background: np.ndarray) -> np.ndarray:
    """(3,) uint8: the mean of an image's background gradient (G, G, 3), the midpoint of its two colours."""
    return np.round(background.mean(axis=(0, 1))).astype(np.uint8)


def _on_canvas(image: np.ndarray, canvas: int, fill) -> np.ndarray:
    """(S, S, ...) -> (canvas * S, canvas * S, ...) filled with `fill`, the image at the top left.

    The top left keeps every box and the image's pixel grid where canvas 1 has them: the anchors
    on the objects are canvas 1's at every stride, and the JPEG blocks inside are the same blocks.
    """
    s = image.shape[0]
    out = np.empty((canvas * s, canvas * s, *image.shape[2:]), dtype=image.dtype)
    out[...] = fill
    out[:s, :s] = image
    return out


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The Generator of one image: the same (seed, split, index) always draws the same image."""
    return np.random.default_rng([seed, SPLITS.index(split) if split in SPLITS else 99, index])


# --------------------------------------------------------------------------------------------
# Writing COCO files.


def write_split(
    out: str | os.PathLike,
    split: str,
    num_images: int,
    *,
    spec: SyntheticSpec,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Render `num_images` images into {out}/images/{split}/ and write {out}/{split}.json.

    Returns:
        {"images": n, "boxes": B, "seconds": time spent}.
    """
    out = Path(out)
    image_dir = out / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    renderer = SyntheticRenderer(spec, seed)
    images, annotations = [], []
    indices = range(num_images)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"synthetic {split}", unit="img")
    start = time.perf_counter()
    for i in indices:
        pixels, boxes, labels = renderer.render(image_rng(seed, split, i))
        file_name = f"{split}/{i:06d}.jpg"
        Image.fromarray(pixels).save(out / "images" / file_name, quality=spec.jpeg_quality)
        image_id = i + 1
        images.append({"id": image_id, "file_name": file_name, "height": pixels.shape[0], "width": pixels.shape[1]})
        for box, label in zip(boxes.tolist(), labels.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label + 1,
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    seconds = time.perf_counter() - start
    data = {
        "info": {"description": "detector synthetic shapes", "split": split, "seed": seed, "spec": asdict(spec)},
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(SYNTHETIC_CLASSES)
        ],
    }
    write_atomic(out / f"{split}.json", json.dumps(data))  # the JSON appears only once every image is written
    return {"images": num_images, "boxes": len(annotations), "seconds": seconds}


def make_synthetic(
    out: str | os.PathLike, *, num_train: int = 2000, num_val: int = 300, seed: int = 0, progress: bool = False,
    **knobs: Any,
) -> dict[str, Any]:
    """Write the train and val splits (see the module doc) and report the speed.

    Args:
        knobs: fields of `SyntheticSpec` (its defaults for the others).

    Returns:
        {"train": stats, "val": stats, "images_per_second": float} with stats from `write_split`.
    """
    unknown = sorted(set(knobs) - {f.name for f in fields(SyntheticSpec)})
    if unknown:
        raise TypeError(f"make_synthetic() got unknown settings: {', '.join(unknown)}")
    spec = SyntheticSpec(**knobs)
    stats: dict[str, Any] = {}
    for split, n in (("train", num_train), ("val", num_val)):
        stats[split] = write_split(out, split, n, spec=spec, seed=seed, progress=progress)
    total_images = sum(stats[s]["images"] for s in SPLITS)
    total_seconds = sum(stats[s]["seconds"] for s in SPLITS)
    stats["images_per_second"] = total_images / total_seconds if total_seconds > 0 else float("inf")
    return stats


def synthetic_exists(root: str | os.PathLike) -> bool:
    """Whether {root}/train.json and {root}/val.json are both there."""
    root = Path(root)
    return all((root / f"{split}.json").is_file() for split in SPLITS)
