"""Reading an image file into the one layout the package uses: (H, W, 3) uint8 RGB.

Choices, made once here for every dataset:

- EXIF orientation is applied (`PIL.ImageOps.exif_transpose`), as detectron2's `read_image`
  does (torchvision's CocoDetection does not). Annotations are therefore assumed to refer to
  the image as displayed, i.e. after the rotation. When a dataset declares the image's width
  and height (COCO JSON, VOC XML) and the decoded, rotated image disagrees, the dataset raises
  a `DatasetError` naming the file instead of training on misplaced boxes (detectron2 raises
  too). An unreadable EXIF block is ignored: the image is used as stored.
- Grayscale, palette, CMYK and RGBA images are converted to RGB with Pillow; alpha is dropped,
  not composited (what `Image.convert("RGB")` does, as torchvision and detectron2 do).
- 16-bit grayscale ("I;16" modes, and "I" which Pillow uses for 16-bit samples in 32-bit
  integers) is scaled to 8 bits with 65535 -> 255 (Pillow's own conversion would clip every
  value above 255 to white), then replicated to three channels. Float images ("F") are clipped
  to 0..255.
- A missing, undecodable or truncated file raises `DatasetError` naming the file. Pillow's
  global `ImageFile.LOAD_TRUNCATED_IMAGES` is left False, so a truncated JPEG is an error and
  never a silently grey-padded image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from detector.data.errors import DatasetError

# EXIF orientations 5..8 swap width and height once applied.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION_TAG = 0x0112


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise DatasetError(path, "image file not found")
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetError(path, f"cannot read image ({err})") from None


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any Pillow mode, with the conversions the module doc lists."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.int64)
        gray = ((np.clip(values, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        gray = np.clip(np.asarray(image), 0, 255).round().astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)  # a writable copy (np.asarray would be read-only)


def load_rgb_image(path: str | os.PathLike) -> np.ndarray:
    """Decode `path` into an (H, W, 3) uint8 RGB array, EXIF orientation applied.

    Raises:
        DatasetError: the file is missing, not an image, corrupt or truncated.
    """
    path = Path(path)
    with _open(path) as image:
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise DatasetError(path, f"corrupt or truncated image ({err})") from None
        try:
            image = ImageOps.exif_transpose(image)
        except Exception:  # noqa: BLE001 - a broken EXIF block: use the stored layout
            pass
        try:
            array = _to_rgb_array(image)
        except (OSError, ValueError) as err:
            raise DatasetError(path, f"cannot convert image to RGB ({err})") from None
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise DatasetError(path, f"unexpected decoded image shape {array.shape}")
    return np.ascontiguousarray(array)


#: Suffixes of the image files that folders are searched for (predict, YOLO datasets).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of the image as displayed (EXIF orientation applied), from its header only.

    Raises:
        DatasetError: the file is missing or not an image.
    """
    path = Path(path)
    with _open(path) as image:
        width, height = image.size
        try:
            orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
        except Exception:  # noqa: BLE001 - unreadable EXIF: stored layout
            orientation = 1
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return int(height), int(width)
