"""Fixtures of the export tests: a tiny detector's checkpoint and images of three sizes."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from detector import save_detector

from .helpers import load_float_image, tiny_detector


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "tiny.ckpt"
    save_detector(tiny_detector(), path, class_names=["a", "b", "c", "d", "e"])
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint exported by the export command (default format: ONNX)."""
    from detector.export.command import main as export_main

    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    assert export_main(["--checkpoint", str(tiny_checkpoint), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def image_files(tiny_synthetic, tmp_path_factory):
    """Synthetic val images (128 x 128), the first one stretched to 640 x 480 and cropped to 210 x 300."""
    val = sorted((tiny_synthetic / "images" / "val").glob("*.jpg"))[:3]
    folder = tmp_path_factory.mktemp("images")
    big = Image.open(val[0]).convert("RGB").resize((640, 480), Image.BILINEAR)
    big.save(folder / "wide_640x480.png")
    big.crop((100, 50, 310, 350)).save(folder / "tall_210x300.png")
    for path in val:
        Image.open(path).save(folder / f"val_{path.stem}.png")
    return sorted(folder.iterdir())


@pytest.fixture(scope="session")
def image_batches(image_files):
    """Batches of equal-sized images, as an exported graph takes them: (N, 3, H, W) each."""
    by_size: dict[tuple, list[torch.Tensor]] = {}
    for path in image_files:
        image = load_float_image(path)
        by_size.setdefault(tuple(image.shape), []).append(image)
    batches = [torch.stack(images) for images in by_size.values()]
    assert sorted(len(b) for b in batches) == [1, 1, 3] and len({b.shape[2:] for b in batches}) == 3
    return batches
