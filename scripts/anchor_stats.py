"""How imbalanced is a dataset for a given anchor setup? Positive, negative and ignored anchors per image.

    python scripts/anchor_stats.py --config configs/synthetic.yaml [--max-images 200]

Uses the config's data: section (evaluation transforms: resize only) and its model.detector
anchor and matcher settings; prints the table and writes nothing.
"""

from __future__ import annotations

import argparse
import sys

import torch
import yaml
from tqdm import tqdm

from detector.cli import one_line_errors
from detector.model import RetinaNetConfig, build_retinanet
from detector.model.matcher import BACKGROUND, IGNORE
from detector.training.datamodule import datamodule_from_config


@torch.no_grad()
def anchor_statistics(config_path: str, max_images: int | None = None) -> dict[str, float]:
    with open(config_path) as f:
        config = yaml.safe_load(f)
    detector_cfg = dict(config.get("model", {}).get("detector", {}))
    datamodule = datamodule_from_config(config_path, **({"max_val_images": max_images} if max_images else {}))
    datamodule.prepare_data()  # generates the synthetic set if it is missing
    datamodule.setup("validate")
    detector_cfg["num_classes"] = datamodule.num_classes
    model = build_retinanet(RetinaNetConfig.from_dict(detector_cfg))
    counts = torch.zeros(3)
    images = boxes = 0
    for batch in tqdm(datamodule.val_dataloader(), desc="anchors", unit="batch"):
        feats = [(-(-batch["images"].shape[2] // s), -(-batch["images"].shape[3] // s)) for s in (8, 16, 32, 64, 128)]
        anchors = model.anchor_generator(tuple(batch["images"].shape[-2:]), feats)
        matches = model.matcher(batch["boxes"], batch["valid"], anchors)
        counts += torch.tensor([(matches >= 0).sum(), (matches == BACKGROUND).sum(), (matches == IGNORE).sum()]).float()
        images += len(matches)
        boxes += int(batch["valid"].sum())
    pos, neg, ign = (counts / images).tolist()
    return {"images": images, "boxes_per_image": boxes / images, "anchors_per_image": pos + neg + ign,
            "positives_per_image": pos, "negatives_per_image": neg, "ignored_per_image": ign,
            "negatives_per_positive": neg / max(pos, 1e-9), "num_classes": datamodule.num_classes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a training config (YAML)")
    parser.add_argument("--max-images", type=int, default=200, help="validation images to count over")
    args = parser.parse_args(argv)
    with one_line_errors():
        stats = anchor_statistics(args.config, args.max_images)
    print("| statistic | value |\n|---|---:|")
    for k, v in stats.items():
        print(f"| {k} | {v:,.1f} |" if isinstance(v, float) else f"| {k} | {v} |")
    print(f"\npositive : negative anchors = 1 : {stats['negatives_per_positive']:.0f}"
          f" ({stats['negatives_per_positive'] * stats['num_classes']:.0f} negative sigmoid terms per positive anchor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
