"""The one evaluation loop: a detector over a dataset split, scored with COCO AP (no Lightning).

`detect_collated` is the step: `RetinaNet.predict` on a collated batch of original-size images (the
datamodule's evaluation transforms do not resize), so validation (training/module.py), this loop
(`scripts/evaluate.py --checkpoint`) and `scripts/predict.py` give the same detections of an image.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from ..model.retinanet import rescale_boxes

from .accumulator import CocoDetectionAccumulator


@torch.no_grad()
def detect_collated(model, batch) -> list[dict[str, Tensor]]:
    """predict() on a collated batch: "images" (N, 3, H, W) uint8 padded, "image_sizes" and "orig_sizes" (N, 2).

    Returns per image {"boxes" (D, 4) XYXY in original-image pixels, "scores" (D,), "labels" (D,)}.
    """
    sizes = batch["image_sizes"].tolist()
    images = [image[:, :h, :w].float().div(255) for image, (h, w) in zip(batch["images"], sizes)]
    detections = model.predict(images)
    for det, size, orig in zip(detections, sizes, batch["orig_sizes"].tolist()):
        det["boxes"] = rescale_boxes(det["boxes"], from_size=size, to_size=orig)  # the identity when not resized
    return detections


@torch.no_grad()
def evaluate_detector(model, datamodule, *, split: str = "val", device: str = "cpu", per_class: bool = True,
                      print_summary: bool = False, progress: bool = True,
                      accumulator: CocoDetectionAccumulator | None = None) -> dict[str, Any]:
    """COCO metrics of `model` (a RetinaNet) on a DetectionDataModule's split ("val" or "train").

    The train split is evaluated through the evaluation transforms (no resize, no flip).
    ``accumulator``: collect the detections into this one (a caller that also wants the results,
    e.g. for the HTML report) instead of a private one.
    """
    datamodule.prepare_data()
    datamodule.setup("validate")
    dataset = datamodule.eval_dataset(split)
    loader = datamodule.eval_dataloader(dataset)
    model = model.to(device).eval()
    accumulator = CocoDetectionAccumulator() if accumulator is None else accumulator
    for batch in tqdm(loader, desc=f"evaluate {split}", unit="batch", disable=not progress):
        accumulator.update(batch["image_ids"], detect_collated(model, batch))
    return accumulator.compute(dataset.coco_gt(), datamodule.label_to_category_id, per_class=per_class,
                               print_summary=print_summary)
