"""Albumentations pipelines for images and their boxes.

Both pipelines resize to `model.preprocess.resized_size`, the one size rule that `predict()` and
the export graph use too (torchvision's: one scale, min(min_size / short side, max_size / long
side), each side floored in float64). It is one resize, not two chained ones. An image too thin
to resize raises `ImageTooThinError` (the dataset skips it like an unreadable image).

- eval: the resize only, or (resize=False, the datamodule's evaluation) nothing but the size
  check: `RetinaNet.predict` resizes, as for any image file.
- train: the resize with `min_size` drawn from a list (scale jitter), a horizontal flip and a
  light colour jitter (brightness, contrast, saturation, hue).

Boxes go through `A.BboxParams(format="pascal_voc", label_fields=["labels"], clip=True)`: a box
reaching outside the input image is clipped to it on entry (one entirely outside is dropped);
after the steps, a box is dropped when less than `min_visibility` of it stays in the frame (this
only bites if a cropping step is added: resize and flip keep boxes inside) or when it ends up
narrower or shorter than `min_box_size` pixels. The image stays (H, W, 3) uint8 numpy; collate
makes the (N, 3, H, W) tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.geometric import functional as fgeometric
from albumentations.core.transforms_interface import BaseTransformInitSchema
from albumentations.core.type_definitions import Targets

from detector.model.preprocess import resized_size


class ResizeShortestEdge(A.DualTransform):
    """Resize keeping the aspect ratio: short side -> min_size (drawn when a list), long <= max_size.

    Args:
        min_size: target short side, or a list to draw it from uniformly (scale jitter).
        max_size: upper bound of the long side.
        interpolation: OpenCV flag for the image.
    """

    _targets = (Targets.IMAGE, Targets.MASK, Targets.BBOXES)

    class InitSchema(BaseTransformInitSchema):
        min_size: int | list[int]
        max_size: int
        interpolation: int

    def __init__(
        self,
        min_size: int | Sequence[int],
        max_size: int,
        interpolation: int = cv2.INTER_LINEAR,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.min_size = list(min_size) if isinstance(min_size, Sequence) else min_size
        self.max_size = max_size
        self.interpolation = interpolation

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        min_size = self.py_random.choice(self.min_size) if isinstance(self.min_size, list) else self.min_size
        return {"new_shape": resized_size(height, width, min_size, self.max_size)}

    def apply(self, img: np.ndarray, new_shape: tuple[int, int], **params: Any) -> np.ndarray:
        return fgeometric.resize(img, new_shape, interpolation=self.interpolation)

    def apply_to_mask(self, mask: np.ndarray, new_shape: tuple[int, int], **params: Any) -> np.ndarray:
        return fgeometric.resize(mask, new_shape, interpolation=cv2.INTER_NEAREST)

    def apply_to_bboxes(self, bboxes: np.ndarray, **params: Any) -> np.ndarray:
        return bboxes  # albumentations keeps boxes normalised to [0, 1]: a resize leaves them as they are

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("min_size", "max_size", "interpolation")


class DetectionTransform:
    """A callable (image, boxes, labels) -> (image, boxes, labels) around an `A.Compose`.

    Args:
        compose: the albumentations pipeline, with bbox_params whose label_fields is ["labels"].
        check_size: (min_size, max_size) an image must be resizable to (ImageTooThinError otherwise),
            for a pipeline that leaves the resize to predict().
    """

    def __init__(self, compose: A.Compose, check_size: tuple[int, int] | None = None) -> None:
        self.compose = compose
        self.check_size = check_size

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.check_size is not None:
            resized_size(*image.shape[:2], *self.check_size)
        out = self.compose(
            image=image,
            bboxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            labels=np.asarray(labels, dtype=np.int64).reshape(-1),
        )
        boxes_out = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        labels_out = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
        return out["image"], boxes_out, labels_out

    def set_random_seed(self, seed: int | None) -> None:
        """Reseed the pipeline (DataLoader workers each need their own stream, see datamodule)."""
        self.compose.set_random_seed(seed)

    def __repr__(self) -> str:
        return f"DetectionTransform({self.compose!r})"


def build_transforms(
    train: bool,
    min_size: int | Sequence[int],
    max_size: int,
    hflip_prob: float = 0.5,
    color_jitter: float = 0.2,
    min_visibility: float = 0.3,
    min_box_size: float = 1.0,
    seed: int | None = None,
    resize: bool = True,
) -> DetectionTransform:
    """The train or eval pipeline (see the module doc).

    Args:
        train: add scale jitter, flip and colour jitter.
        min_size: short side; a list draws one per image when training (eval takes the largest).
        max_size: upper bound of the long side.
        hflip_prob: probability of the horizontal flip (train).
        color_jitter: strength of brightness, contrast and saturation jitter, hue gets a tenth
            of it; 0 turns it off (train).
        min_visibility: drop a box when less than this fraction of its area stays in the image.
        min_box_size: drop a box narrower or shorter than this, in output pixels.
        seed: seed of the pipeline's own random stream (None: fresh entropy).
        resize: eval only; False leaves the resize to `RetinaNet.predict` (the evaluation loop's
            path) and only refuses an image too thin to resize.
    """
    sizes = [int(s) for s in min_size] if isinstance(min_size, Sequence) else [int(min_size)]
    if not sizes or min(sizes) <= 0 or max_size <= 0:
        raise ValueError(f"min_size and max_size must be positive, got {min_size}, {max_size}")
    steps: list[A.BasicTransform] = []
    if train:
        steps.append(ResizeShortestEdge(min_size=sizes if len(sizes) > 1 else sizes[0], max_size=max_size))
        if hflip_prob > 0:
            steps.append(A.HorizontalFlip(p=hflip_prob))
        if color_jitter > 0:
            steps.append(
                A.ColorJitter(
                    brightness=color_jitter,
                    contrast=color_jitter,
                    saturation=color_jitter,
                    hue=min(color_jitter / 10, 0.5),
                    p=0.8,
                )
            )
    elif resize:
        steps.append(ResizeShortestEdge(min_size=max(sizes), max_size=max_size))
    compose = A.Compose(
        steps,
        bbox_params=A.BboxParams(
            format="pascal_voc",
            label_fields=["labels"],
            min_visibility=min_visibility,
            min_width=min_box_size,
            min_height=min_box_size,
            clip=True,
            filter_invalid_bboxes=True,  # empty once clipped: dropped instead of an error
        ),
        seed=seed,
    )
    return DetectionTransform(compose, check_size=None if train or resize else (max(sizes), max_size))
