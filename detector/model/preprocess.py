"""From pixels to the network's input: the one size rule, resize, padding and normalisation.

Shape symbols: N images, H x W an input's size, h' x w' its resized size, H' x W' the padded batch.

The size rule is torchvision's (GeneralizedRCNNTransform): scale = min(min_size / short side,
max_size / long side) in float64, and each side becomes floor(side * scale). The data transform
(`data/transforms.py`), `RetinaNet.predict` and the export graph (`export/graph.py`) all call
`resized_size`, so an image has one resized size whichever path it takes. A side that would
become smaller than MIN_RESIZED_SIDE (1) px raises `ImageTooThinError`; callers skip such an image with a warning
as they skip an unreadable one.

`resized_size`, `resize` and `pad` take Python ints, SymInts (torch.export) or 0-dim int64
tensors (TorchScript tracing for ONNX, where a Python int would be frozen into the graph);
`dims` gives a tensor's sizes in the form the current mode needs, `smaller` their minimum.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


#: The smallest resized side; a thinner image is refused by every path alike.
MIN_RESIZED_SIDE = 1


class ImageTooThinError(ValueError):
    """An image so thin that a side of its resized size would be below MIN_RESIZED_SIDE px."""


def tracing() -> bool:
    """True while TorchScript-tracing (ONNX) or torch.export-ing: no data-dependent Python control flow then."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting()


def dims(x: Tensor, *which: int):
    """x's sizes along `which`: 0-dim int64 tensors when tracing for ONNX, ints (or SymInts) otherwise."""
    if torch.jit.is_tracing():
        shape = torch._shape_as_tensor(x)
        return tuple(shape[d] for d in which)
    return tuple(x.shape[d] for d in which)


def smaller(a, b):
    """min(a, b) of ints, SymInts or 0-dim tensors (as `dims` gives them)."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return torch.minimum(torch.as_tensor(a), torch.as_tensor(b))
    return torch.sym_min(a, b)


def resized_size(h, w, min_size: int, max_size: int):
    """(h', w') of an (h, w) image: floor(side * scale), scale = min(min_size / short, max_size / long), float64.

    Raises ImageTooThinError (ints only) when h' or w' would be below MIN_RESIZED_SIDE.
    """
    if isinstance(h, Tensor):
        # (1,)-shaped: the ONNX exporter computes 0-dim float64 tensors in float32 (its scalar type
        # analysis), which turns 335 * (800 / 335) into 800 instead of float64's 799.99...
        hf, wf = h.reshape(1).double(), w.reshape(1).double()
        # true divisions of float64 tensors: a Python number / tensor multiplies by a rounded reciprocal
        lo, hi = torch.full_like(hf, min_size), torch.full_like(hf, max_size)
        scale = torch.minimum(lo / torch.minimum(hf, wf), hi / torch.maximum(hf, wf))
        return (hf * scale).floor().long().reshape(()), (wf * scale).floor().long().reshape(())
    scale = torch.sym_min(min_size / torch.sym_min(h, w), max_size / torch.sym_max(h, w))
    new_h, new_w = math.trunc(h * scale), math.trunc(w * scale)  # floor of a positive size; a .pt2 can store trunc
    if isinstance(new_h, int) and isinstance(new_w, int) and min(new_h, new_w) < MIN_RESIZED_SIDE:
        raise ImageTooThinError(
            f"a {h}x{w} image (h x w) is too thin to resize to min_size {min_size} / max_size {max_size}: "
            f"it would be {new_h}x{new_w}")
    return new_h, new_w


def normalize(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(N, 3, H, W) uint8 in [0, 255] or float in [0, 1] -> float (images - mean) / std; mean, std (1, 3, 1, 1)."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    return (images - mean) / std


def resize(images: Tensor, min_size: int, max_size: int) -> tuple[Tensor, tuple]:
    """(N, 3, H, W) float -> (N, 3, h', w') bilinear (torchvision's interpolation) and (h', w')."""
    h, w = dims(images, 2, 3)
    new_h, new_w = resized_size(h, w, min_size, max_size)
    return F.interpolate(images, size=(new_h, new_w), mode="bilinear", align_corners=False), (new_h, new_w)


def padded_size(h, w, size_divisible: int):
    """(H', W'): h and w rounded up to a multiple of size_divisible."""
    return (h + size_divisible - 1) // size_divisible * size_divisible, \
        (w + size_divisible - 1) // size_divisible * size_divisible


def pad_to(images: Tensor, size, fill) -> Tensor:
    """(N, 3, h', w') -> (N, 3, H', W') = size, filled with the colour `fill` (3 floats) at the bottom and right."""
    h, w = dims(images, 2, 3)
    border = (0, size[1] - w, 0, size[0] - h)
    # channel by channel: F.pad takes one constant, and a constant keeps the graph traceable
    return torch.cat([F.pad(images[:, c : c + 1], border, value=float(fill[c])) for c in range(3)], dim=1)


def pad(images: Tensor, size_divisible: int, fill) -> Tensor:
    """(N, 3, h', w') -> (N, 3, H', W') padded to a multiple of size_divisible with the colour `fill`."""
    h, w = dims(images, 2, 3)
    return pad_to(images, padded_size(h, w, size_divisible), fill)


def preprocess(images: list[Tensor], min_size: int, max_size: int, size_divisible: int,
               fill) -> tuple[Tensor, Tensor]:
    """Resize and pad (3, H_i, W_i) images in [0, 1] of any sizes into one batch in [0, 1].

    The padding is the colour `fill` (the model's image_mean, 3 floats), which the model's own
    normalisation maps to exactly 0: the padding torchvision gives by normalising first.
    Returns the batch (N, 3, H', W') and image_sizes (N, 2) int64, each image's (h', w') before padding.
    An image of ONNX's or torch.export's graph is the case N = 1 of this, or a batch of one size.
    """
    resized = [resize(image[None], min_size, max_size)[0] for image in images]
    sizes = torch.tensor([tuple(r.shape[-2:]) for r in resized], dtype=torch.int64)
    size = padded_size(*(int(s) for s in sizes.max(dim=0).values), size_divisible)
    batch = torch.cat([pad_to(r, size, fill) for r in resized])
    return batch, sizes.to(batch.device)
