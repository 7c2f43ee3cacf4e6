"""Image decoding: modes converted to RGB uint8, EXIF orientation, corrupt and truncated files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from detector.data import COCODetection, DatasetError, load_rgb_image
from detector.data.images import read_image_size
from tests.data.fixtures import coco_json, rgb_jpeg_bytes, write_coco


def test_grayscale_palette_and_rgba_become_rgb(tmp_path):
    gray = np.arange(12 * 8, dtype=np.uint8).reshape(12, 8)
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    out = load_rgb_image(tmp_path / "gray.png")
    assert out.shape == (12, 8, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)

    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red: alpha is dropped, not composited
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_rgb_image(tmp_path / "rgba.png")[0, 0], [200, 0, 0])

    Image.new("RGB", (4, 4), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "palette.png")
    np.testing.assert_array_equal(load_rgb_image(tmp_path / "palette.png")[0, 0], [10, 200, 30])


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 65535, 257]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    out = load_rgb_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(out[0, :, 0], [0, 100, 255, 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def _exif_rotated_jpeg(path):
    """Stored 10 x 20 (h x w): left half red, right half blue, EXIF orientation 6 (90 deg CW)."""
    stored = np.zeros((10, 20, 3), np.uint8)
    stored[:, :10] = (255, 0, 0)
    stored[:, 10:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(path, exif=exif, quality=95)


def test_exif_orientation_is_applied(tmp_path):
    _exif_rotated_jpeg(tmp_path / "rot.jpg")
    out = load_rgb_image(tmp_path / "rot.jpg")
    assert out.shape == (20, 10, 3)  # displayed layout
    assert out[3, 5, 0] > 200 and out[3, 5, 2] < 60  # top half red
    assert out[16, 5, 2] > 200 and out[16, 5, 0] < 60  # bottom half blue
    assert read_image_size(tmp_path / "rot.jpg") == (20, 10)


def test_exif_rotated_image_against_declared_size(tmp_path):
    cats = [(1, "thing")]
    ann = [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4]}]
    ok_file, image_root = write_coco(tmp_path, coco_json([(1, "rot.jpg", 20, 10)], ann, cats), name="ok.json")
    _exif_rotated_jpeg(image_root / "rot.jpg")
    assert COCODetection(ok_file, image_root)[0]["orig_size"] == (20, 10)

    stored_file, _ = write_coco(tmp_path, coco_json([(1, "rot.jpg", 10, 20)], ann, cats), name="stored.json")
    _exif_rotated_jpeg(image_root / "rot.jpg")
    with pytest.raises(DatasetError, match="EXIF") as err:
        COCODetection(stored_file, image_root)[0]
    assert "rot.jpg" in str(err.value)


def test_missing_corrupt_and_truncated_images_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="not found") as err:
        load_rgb_image(tmp_path / "nope.jpg")
    assert "nope.jpg" in str(err.value)

    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(DatasetError, match="cannot read image") as err:
        load_rgb_image(corrupt)
    assert str(corrupt) in str(err.value)

    data = rgb_jpeg_bytes(64, 64)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated") as err:
        load_rgb_image(truncated)
    assert str(truncated) in str(err.value)
