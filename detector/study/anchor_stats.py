"""How imbalanced is a dataset for a given anchor setup: positive, negative and ignored anchors.

`anchor_statistics(config_path)` counts, over the validation images of a training config (the
evaluation transforms: resize only), what the matcher makes of every anchor, with the config's
own anchor and matcher settings. Two ratios describe the imbalance a classification loss sees:

- per anchor: negative anchors per positive anchor;
- per sigmoid term: with K sigmoid outputs an anchor, a positive anchor has one positive term and
  K - 1 negative ones, a negative anchor K negative ones: (negatives * K + positives * (K - 1))
  / positives negative terms per positive term.

`foreground_fraction` is the share of positive terms among all terms (ignored anchors left out):
the prior Sampling-Free's bias init takes (pi = N_fg / (N * K)).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import yaml
from tqdm import tqdm

from ..model import RetinaNetConfig, build_retinanet
from ..model.matcher import BACKGROUND, IGNORE

STRIDES = (8, 16, 32, 64, 128)


def neg_terms_per_pos(positives: float, negatives: float, num_classes: int) -> float:
    """Negative sigmoid terms per positive term: K per negative anchor and K - 1 per positive one."""
    return (negatives * num_classes + positives * (num_classes - 1)) / max(positives, 1e-9)


@torch.no_grad()
def anchor_statistics(config_path: str | os.PathLike, max_images: int | None = None,
                      progress: bool = True) -> dict[str, Any]:
    """Per-image anchor counts and the imbalance ratios (see the module doc) of a config's val split."""
    from ..training.datamodule import datamodule_from_config

    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    detector_cfg = dict(config.get("model", {}).get("detector", {}))
    datamodule = datamodule_from_config(config_path, **({"max_val_images": max_images} if max_images else {}))
    datamodule.prepare_data()  # generates the synthetic set if it is missing
    datamodule.setup("validate")
    detector_cfg["num_classes"] = datamodule.num_classes
    model = build_retinanet(RetinaNetConfig.from_dict(detector_cfg))
    counts = torch.zeros(3)
    images = boxes = 0
    for batch in tqdm(datamodule.val_dataloader(), desc="anchors", unit="batch", disable=not progress):
        height, width = batch["images"].shape[-2:]
        sizes = [(-(-height // s), -(-width // s)) for s in STRIDES]  # P3-P7 feature sizes, as the backbone's
        anchors = model.anchor_generator((height, width), sizes)
        matches = model.matcher(batch["boxes"], batch["valid"], anchors)  # (N, R)
        counts += torch.stack([(matches >= 0).sum(), (matches == BACKGROUND).sum(), (matches == IGNORE).sum()]).float()
        images += len(matches)
        boxes += int(batch["valid"].sum())
    pos, neg, ign = (counts / max(images, 1)).tolist()
    k = datamodule.num_classes
    return {
        "images": images, "boxes_per_image": boxes / max(images, 1), "anchors_per_image": pos + neg + ign,
        "positives_per_image": pos, "negatives_per_image": neg, "ignored_per_image": ign,
        "negatives_per_positive": neg / max(pos, 1e-9), "num_classes": k,
        "negative_terms_per_positive_term": neg_terms_per_pos(pos, neg, k),
        "foreground_fraction": pos / max((pos + neg) * k, 1e-9),
    }
