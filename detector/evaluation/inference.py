"""Run a detector over a dataset split and evaluate it with COCO AP (no Lightning)."""

from __future__ import annotations

from typing import Any

import torch
from tqdm import tqdm

from .accumulator import CocoDetectionAccumulator


@torch.no_grad()
def evaluate_detector(model, datamodule, *, split: str = "val", device: str = "cpu", per_class: bool = True,
                      print_summary: bool = False, progress: bool = True,
                      accumulator: CocoDetectionAccumulator | None = None) -> dict[str, Any]:
    """COCO metrics of `model` (a RetinaNet) on a DetectionDataModule's split ("val" or "train").

    The train split is evaluated through the evaluation transforms (resize only, no flip).
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
        detections = model.detect_batch(batch["images"].to(device), batch["image_sizes"].to(device),
                                        batch["orig_sizes"].to(device))
        accumulator.update(batch["image_ids"], detections)
    return accumulator.compute(dataset.coco_gt(), datamodule.label_to_category_id, per_class=per_class,
                               print_summary=print_summary)
