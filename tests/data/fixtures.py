"""Tiny datasets in the real formats (COCO JSON, VOCdevkit XML, real JPEG/PNG files) for tests."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image


def write_image(path: Path, height: int, width: int, color=(120, 130, 140), mode: str = "RGB", **save_kwargs) -> Path:
    """A solid image of `color` written by Pillow (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), color).convert(mode).save(path, **save_kwargs)
    return path


def coco_json(
    images: Iterable[tuple[int, str, int, int]],
    annotations: Iterable[dict],
    categories: Iterable[tuple[int, str]],
) -> dict:
    """A COCO instances dict; images as (id, file_name, height, width), categories as (id, name)."""
    return {
        "images": [{"id": i, "file_name": f, "height": h, "width": w} for i, f, h, w in images],
        "annotations": [
            {"id": k + 1, "iscrowd": 0, "area": a["bbox"][2] * a["bbox"][3], **a} for k, a in enumerate(annotations)
        ],
        "categories": [{"id": c, "name": n} for c, n in categories],
    }


def write_coco(
    root: Path, data: dict, *, image_size: tuple[int, int] | None = None, name: str = "ann.json"
) -> tuple[Path, Path]:
    """Write `data` to root/name and a JPEG for each image (at its declared size) under root/images."""
    image_root = root / "images"
    for im in data["images"]:
        h, w = image_size or (im["height"], im["width"])
        target = image_root / im["file_name"]
        if ".." not in im["file_name"] and not im["file_name"].startswith("/"):
            write_image(target, h, w)
    ann_file = root / name
    root.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(data))
    return ann_file, image_root


def voc_xml(filename: str, size: tuple[int, int] | None, objects: Iterable[tuple]) -> str:
    """VOC XML; objects as (name, (xmin, ymin, xmax, ymax)) or (name, box, difficult)."""
    parts = ["<annotation>", "<folder>VOC2007</folder>", f"<filename>{escape(filename)}</filename>"]
    if size is not None:
        h, w = size
        parts.append(f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>")
    for obj in objects:
        name, box = obj[0], obj[1]
        difficult = obj[2] if len(obj) > 2 else 0
        xmin, ymin, xmax, ymax = box
        parts.append(
            f"<object><name>{escape(name)}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
        )
    parts.append("</annotation>")
    return "\n".join(parts)


def make_voc(
    root: Path,
    images: dict[str, dict],
    image_sets: dict[str, list[str]],
    year: str = "2007",
) -> Path:
    """A VOCdevkit under root: images = {id: {"size": (h, w), "objects": [...]}}; returns root/VOCdevkit.

    An image entry may set "xml_size": None to leave <size> out of the XML.
    """
    devkit = root / "VOCdevkit"
    folder = devkit / f"VOC{year}"
    (folder / "Annotations").mkdir(parents=True, exist_ok=True)
    (folder / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for image_id, spec in images.items():
        h, w = spec["size"]
        write_image(folder / "JPEGImages" / f"{image_id}.jpg", h, w, color=spec.get("color", (90, 100, 110)))
        xml_size = spec.get("xml_size", (h, w))
        (folder / "Annotations" / f"{image_id}.xml").write_text(voc_xml(f"{image_id}.jpg", xml_size, spec["objects"]))
    for name, ids in image_sets.items():
        (folder / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return devkit


def rgb_jpeg_bytes(height: int, width: int) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 100, np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


REPO = Path(__file__).resolve().parents[2]


def load_script(name: str):
    """Import scripts/{name}.py as a module, to call its main(argv) in-process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
