"""`detector check-data`: what training will see, and whether the anchors reach the boxes.

    detector check-data --config configs/synthetic.yaml [--data.root DIR ...] [--split train] --out runs/check
    detector check-data --config CONFIG --out DIR --browse 4      # also 4 augmented training batches, drawn

The config and `--section.key VALUE` overrides are those of `scripts/train.py fit` (the same parser).
The split is read through the evaluation transform (the resize to the training image size,
min_size / max_size, no augmentation), batched and padded as training pads it; the config's own
anchor generator and matcher then give, for every box (crowd/difficult boxes left out, as in
training):
- its best anchor IoU, and whether it is below the foreground threshold `fg_iou` (not covered);
- its positive anchors (the matcher's foreground anchors matched to it); a box below fg_iou with
  positives is "rescued only by the low-quality match";
and, per image, positive, negative and ignored anchors (`anchor_statistics`: the ratios that
scripts/anchor_stats.py prints and the imbalance lab measures each level by). Coverage is the
share of boxes whose best anchor IoU >= fg_iou.

Written to DIR: check.json (the numbers below, per class and per size bucket of sqrt(w * h) in
training pixels), label_stats.png (boxes per class; box width x height against the anchor
shapes; box centres) and worst_boxes.png (the least-covered boxes on their resized images, the box
red, its best anchor green). The anchor suggestion searches the anchor sizes (the config's per
level, times 2^(k/3)), scales and aspect ratios (the config's, the paper's, wider ones, and
quantiles of the boxes' own h / w) for the highest coverage of the split, preferring fewer anchors
per location within 0.005, and prints coverage before and after and the YAML lines to use.

`warn_low_coverage` is the one-line warning that `fit` prints at start when the train split's
coverage (on up to 200 images) is below 0.95.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.ops import box_iou
from tqdm import tqdm

from .data.collate import DetectionCollator
from .data.dataset import draw_subset
from .data.transforms import build_transforms
from .model import RetinaNetConfig, build_retinanet
from .model.anchors import AnchorGenerator
from .model.matcher import BACKGROUND, IGNORE, Matcher

#: Edges of the size buckets, sqrt(w * h) in training pixels.
SIZE_EDGES = (0, 16, 32, 64, 128, 256, math.inf)
COVERAGE_WARNING = 0.95
WARNING_IMAGES = 200
#: Candidate aspect-ratio sets (h / w) of the suggestion, besides the config's and the data's quantiles.
RATIO_SETS = ((0.5, 1.0, 2.0), (0.25, 0.5, 1.0, 2.0, 4.0))
SCALE_SETS = ((1.0, 2 ** (1 / 3), 2 ** (2 / 3)), (1.0, 2 ** (1 / 4), 2 ** (1 / 2), 2 ** (3 / 4)))
SIZE_FACTORS = tuple(2 ** (k / 3) for k in range(-3, 4))
BOX_CHUNK = 64  # boxes per IoU block: (64, R) floats at a time


@dataclass
class BoxRecords:
    """One entry per training box of the split, in training (resized) pixels.

    Attributes:
        boxes: (B, 4) XYXY; labels: (B,); image: (B,) row in the split; padded: (B, 2) the padded
        batch size (H, W) the box was matched in; image_sizes: (B, 2) its resized image's (h, w);
        best_iou: (B,) its best anchor IoU; positives: (B,) its foreground anchors.
        anchor_counts: (3,) positive, negative, ignored anchors summed over images; images: n.
    """

    boxes: np.ndarray
    labels: np.ndarray
    image: np.ndarray
    padded: np.ndarray
    image_sizes: np.ndarray
    best_iou: np.ndarray
    positives: np.ndarray
    anchor_counts: np.ndarray
    images: int


class FeatureSizes:
    """(Hi, Wi) of each FPN level for a padded size, from the config's backbone run on the meta device."""

    def __init__(self, config: RetinaNetConfig) -> None:
        with torch.device("meta"):
            self.backbone = build_retinanet(replace(config, backbone_weights=None, num_classes=1)).backbone
        self.cache: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def __call__(self, size: tuple[int, int]) -> list[tuple[int, int]]:
        if size not in self.cache:
            with torch.no_grad():
                features = self.backbone(torch.empty((1, 3, *size), device="meta"))
            self.cache[size] = [tuple(f.shape[-2:]) for f in features]
        return self.cache[size]


def anchor_generator(config: RetinaNetConfig, sizes=None, scales=None, ratios=None) -> AnchorGenerator:
    return AnchorGenerator(sizes or config.anchor_sizes, scales or config.anchor_scales,
                           ratios or config.anchor_ratios, config.torchvision_anchors)


def best_anchor_iou(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """(B,) the best IoU of each box (B, 4) with any of the anchors (R, 4), in blocks of boxes."""
    if not len(boxes):
        return torch.zeros(0)
    return torch.cat([box_iou(chunk, anchors).amax(dim=1) for chunk in boxes.split(BOX_CHUNK)])


@torch.no_grad()
def box_records(dataset: Dataset, config: RetinaNetConfig, *, batch_size: int = 8, num_workers: int = 0,
                size_divisible: int = 128, progress: bool = True) -> BoxRecords:
    """Match every box of `dataset` (items already resized) against the config's anchors."""
    generator, features = anchor_generator(config), FeatureSizes(config)
    matcher = Matcher(config.fg_iou, config.bg_iou, config.allow_low_quality_matches)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                        collate_fn=DetectionCollator(size_divisible))
    parts: dict[str, list] = {k: [] for k in ("boxes", "labels", "image", "padded", "image_sizes", "best_iou",
                                              "positives")}
    counts, row = torch.zeros(3, dtype=torch.int64), 0
    for batch in tqdm(loader, desc="check-data", unit="batch", disable=not progress):
        size = tuple(batch["images"].shape[-2:])
        anchors = generator(size, features(size))
        matches = matcher(batch["boxes"], batch["valid"], anchors)  # (N, R)
        counts += torch.stack([(matches >= 0).sum(), (matches == BACKGROUND).sum(), (matches == IGNORE).sum()])
        for i in range(len(matches)):
            valid = batch["valid"][i]
            boxes = batch["boxes"][i][valid]
            m = len(boxes)
            parts["boxes"].append(boxes)
            parts["labels"].append(batch["labels"][i][valid])
            parts["image"].append(torch.full((m,), row + i))
            parts["padded"].append(torch.tensor(size).expand(m, 2))
            parts["image_sizes"].append(batch["image_sizes"][i].expand(m, 2))
            parts["best_iou"].append(best_anchor_iou(boxes, anchors))
            parts["positives"].append((matches[i][None, :] == torch.arange(m)[:, None]).sum(dim=1))
        row += len(matches)
    cat = {k: torch.cat(v).numpy() if v else np.zeros((0, 4) if k == "boxes" else (0, 2) if k in (
        "padded", "image_sizes") else 0) for k, v in parts.items()}
    return BoxRecords(**cat, anchor_counts=counts.numpy(), images=row)


def _share(mask: np.ndarray) -> float | None:
    return float(mask.mean()) if len(mask) else None


def coverage_table(records: BoxRecords, groups: np.ndarray, names: list[str], fg_iou: float) -> dict[str, dict]:
    """Per group: boxes, the share below fg_iou, and how many of those only the low-quality match rescues."""
    below = records.best_iou < fg_iou
    table = {}
    for g, name in enumerate(names):
        mask = groups == g
        table[name] = {"boxes": int(mask.sum()), "below_fg_share": _share(below[mask]),
                       "rescued_by_low_quality_only": int((below & mask & (records.positives > 0)).sum()),
                       "without_positive_anchor": int((mask & (records.positives == 0)).sum())}
    return table


def summary(records: BoxRecords, class_names: list[str], config: RetinaNetConfig) -> dict[str, Any]:
    """check.json's numbers (see the module doc)."""
    wh = records.boxes[:, 2:] - records.boxes[:, :2]
    side = np.sqrt(wh.prod(axis=1))
    bucket = np.digitize(side, SIZE_EDGES[1:-1])
    bucket_names = [f"{lo}-{hi}" if hi != math.inf else f">={lo}" for lo, hi in zip(SIZE_EDGES[:-1], SIZE_EDGES[1:])]
    below = records.best_iou < config.fg_iou
    pos, neg, ign = (int(v) for v in records.anchor_counts)

    def quantiles(v: np.ndarray) -> dict[str, float] | None:
        return {f"p{q}": round(float(np.percentile(v, q)), 2) for q in (0, 5, 50, 95, 100)} if len(v) else None

    return {
        "images": records.images, "boxes": len(records.labels),
        "boxes_per_class": {n: int((records.labels == k).sum()) for k, n in enumerate(class_names)},
        "box_size_training_px": {"width": quantiles(wh[:, 0]), "height": quantiles(wh[:, 1]), "sqrt_area": quantiles(side)},
        "fg_iou": config.fg_iou,
        "coverage": _share(~below),
        "below_fg_share": _share(below),
        "rescued_by_low_quality_only": int((below & (records.positives > 0)).sum()),
        "without_positive_anchor": int((records.positives == 0).sum()),
        "positives_per_box": {"mean": float(records.positives.mean()) if len(records.positives) else None,
                              **(quantiles(records.positives.astype(float)) or {})},
        "per_class": coverage_table(records, records.labels, class_names, config.fg_iou),
        "per_size": coverage_table(records, bucket, bucket_names, config.fg_iou),
        "anchors_per_image": {"positive": pos / max(records.images, 1), "negative": neg / max(records.images, 1),
                              "ignored": ign / max(records.images, 1)},
        "negatives_per_positive": neg / pos if pos else None,
        "anchors": {"sizes": list(config.anchor_sizes), "scales": list(config.anchor_scales),
                    "ratios": list(config.anchor_ratios)},
    }


def neg_terms_per_pos(positives: float, negatives: float, num_classes: int) -> float:
    """Negative sigmoid terms per positive term: K per negative anchor and K - 1 per positive one."""
    return (negatives * num_classes + positives * (num_classes - 1)) / max(positives, 1e-9)


def anchor_statistics(config_path: str | Path, max_images: int | None = None, progress: bool = True) -> dict[str, Any]:
    """The imbalance a classification loss sees on a config's val split: anchors per image and two ratios.

    Per anchor, negative anchors per positive one; per sigmoid term (K outputs an anchor),
    `neg_terms_per_pos`; `foreground_fraction`, the share of positive terms among all (ignored
    anchors left out): the prior Sampling-Free's bias init takes (pi = N_fg / (N * K)).
    """
    datamodule, detector = parse_training_config(str(config_path), [])
    datamodule.prepare_data()  # generates the synthetic set if it is missing
    datamodule.setup("validate")
    k = datamodule.num_classes
    dataset = datamodule.val_dataset
    if max_images is not None:
        dataset = Subset(dataset, draw_subset(len(dataset), max_images, seed=0).tolist())
    records = box_records(dataset, RetinaNetConfig.from_dict({**detector, "num_classes": k}),
                          batch_size=datamodule.val_batch_size, size_divisible=datamodule.size_divisible,
                          progress=progress)
    pos, neg, ign = (records.anchor_counts / max(records.images, 1)).tolist()
    return {
        "images": records.images, "boxes_per_image": len(records.labels) / max(records.images, 1),
        "anchors_per_image": pos + neg + ign, "positives_per_image": pos, "negatives_per_image": neg,
        "ignored_per_image": ign, "negatives_per_positive": neg / max(pos, 1e-9), "num_classes": k,
        "negative_terms_per_positive_term": neg_terms_per_pos(pos, neg, k),
        "foreground_fraction": pos / max((pos + neg) * k, 1e-9),
    }


# ------------------------------------------------------------------------------------ the suggestion
def coverage(records: BoxRecords, config: RetinaNetConfig, generator: AnchorGenerator,
             features: FeatureSizes, rows: np.ndarray | None = None) -> float:
    """Share of the boxes (rows of `records`) whose best IoU with `generator`'s anchors is >= fg_iou."""
    rows = np.arange(len(records.labels)) if rows is None else rows
    if not len(rows):
        return float("nan")
    covered = 0
    for size in {tuple(s) for s in records.padded[rows].tolist()}:
        mine = rows[(records.padded[rows] == size).all(axis=1)]
        anchors = generator(size, features(size))
        covered += int((best_anchor_iou(torch.from_numpy(records.boxes[mine]), anchors) >= config.fg_iou).sum())
    return covered / len(rows)


def ratio_quantiles(records: BoxRecords, k: int) -> tuple[float, ...]:
    """k aspect ratios h / w at the boxes' evenly spaced quantiles (log scale), rounded to 2 digits."""
    wh = np.maximum(records.boxes[:, 2:] - records.boxes[:, :2], 1e-6)
    log_ratio = np.log(wh[:, 1] / wh[:, 0])
    qs = np.exp(np.quantile(log_ratio, (np.arange(k) + 0.5) / k))
    return tuple(sorted({round(float(q), 2) for q in qs}))


@torch.no_grad()
def suggest_anchors(records: BoxRecords, config: RetinaNetConfig, max_boxes: int = 1000,
                    progress: bool = True) -> dict[str, Any]:
    """The search of the module doc; {"before", "after", "sizes", "scales", "ratios", "yaml"}."""
    rows = draw_subset(len(records.labels), max_boxes, seed=0)
    features = FeatureSizes(config)
    before = coverage(records, config, anchor_generator(config), features, rows)
    ratio_sets = {tuple(config.anchor_ratios), *RATIO_SETS}
    if len(rows):
        ratio_sets |= {ratio_quantiles(records, 3), ratio_quantiles(records, 5)}
    candidates = [(tuple(round(s * f, 2) for s in config.anchor_sizes), tuple(scales), tuple(ratios))
                  for f in SIZE_FACTORS for scales in {tuple(config.anchor_scales), *SCALE_SETS}
                  for ratios in sorted(ratio_sets)]
    scored = []
    for sizes, scales, ratios in tqdm(candidates, desc="anchor search", unit="setting", disable=not progress):
        value = coverage(records, config, anchor_generator(config, sizes, scales, ratios), features, rows)
        scored.append((value, -len(scales) * len(ratios), sizes, scales, ratios))
    best_value = max(s[0] for s in scored)
    value, _, sizes, scales, ratios = max(s for s in scored if s[0] >= best_value - 0.005)
    if value <= before:
        sizes, scales, ratios, value = tuple(config.anchor_sizes), tuple(config.anchor_scales), tuple(config.anchor_ratios), before
    lines = ["model:", "  detector:", f"    anchor_sizes: {_list(sizes)}", f"    anchor_scales: {_list(scales)}",
             f"    anchor_ratios: {_list(ratios)}"]
    return {"before": before, "after": value, "boxes_searched": len(rows), "sizes": list(sizes),
            "scales": list(scales), "ratios": list(ratios), "yaml": "\n".join(lines)}


def _list(values) -> str:
    return "[" + ", ".join(f"{round(float(v), 4):g}" for v in values) + "]"


# ------------------------------------------------------------------------------------ figures
def draw_label_stats(records: BoxRecords, class_names: list[str], config: RetinaNetConfig, path: Path) -> Path:
    """Boxes per class; box width x height with the anchor shapes; box centres (normalised)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wh = records.boxes[:, 2:] - records.boxes[:, :2]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    counts = [int((records.labels == k).sum()) for k in range(len(class_names))]
    axes[0].bar(range(len(class_names)), counts)
    axes[0].set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axes[0].set_title("boxes per class")
    below = records.best_iou < config.fg_iou
    axes[1].scatter(wh[~below, 0], wh[~below, 1], s=4, alpha=0.4, label=f"covered (IoU >= {config.fg_iou})")
    axes[1].scatter(wh[below, 0], wh[below, 1], s=6, alpha=0.7, c="red", label="not covered")
    generator = anchor_generator(config)
    for level in range(generator.num_levels):
        cell = generator.cell_anchors(level)
        axes[1].scatter(cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1], marker="x", c="black", s=25,
                        label="anchors" if level == 0 else None)
    axes[1].set(xscale="log", yscale="log", xlabel="width (training px)", ylabel="height (training px)",
                title="box sizes and anchor shapes")
    axes[1].legend(fontsize=8)
    centres = (records.boxes[:, :2] + records.boxes[:, 2:]) / 2 / np.maximum(records.image_sizes[:, ::-1], 1)
    axes[2].scatter(centres[:, 0], centres[:, 1], s=3, alpha=0.4)
    axes[2].set(xlim=(0, 1), ylim=(1, 0), xlabel="x / width", ylabel="y / height", title="box centres")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _save_grid(images: list[torch.Tensor], path: Path, nrow: int = 4) -> Path:
    from torchvision.utils import make_grid, save_image

    h = max(im.shape[1] for im in images)
    w = max(im.shape[2] for im in images)
    padded = [torch.nn.functional.pad(im, (0, w - im.shape[2], 0, h - im.shape[1])) for im in images]
    save_image(make_grid(padded, nrow=nrow, padding=4).float() / 255, path)
    return path


@torch.no_grad()
def draw_worst(dataset: Dataset, records: BoxRecords, config: RetinaNetConfig, path: Path, k: int = 16) -> Path | None:
    """The k boxes of lowest best-anchor IoU, each on its resized image: box red, best anchor green."""
    from torchvision.utils import draw_bounding_boxes

    if not len(records.labels):
        return None
    generator, features = anchor_generator(config), FeatureSizes(config)
    tiles = []
    for b in np.argsort(records.best_iou, kind="stable")[:k].tolist():
        item = dataset[int(records.image[b])]
        image = torch.from_numpy(np.ascontiguousarray(item["image"])).permute(2, 0, 1)
        size = tuple(int(v) for v in records.padded[b])
        anchors = generator(size, features(size))
        box = torch.from_numpy(records.boxes[b:b + 1])
        anchor = anchors[box_iou(box, anchors).argmax(dim=1)]
        image = draw_bounding_boxes(image, anchor, colors="lime", width=1)
        image = draw_bounding_boxes(image, box, labels=[f"IoU {records.best_iou[b]:.2f}"], colors="red", width=2)
        tiles.append(image)
    return _save_grid(tiles, path)


def browse(datamodule, batches: int, folder: Path) -> list[Path]:
    """`batches` augmented training batches as the model sees them (padded), boxes drawn."""
    from torchvision.utils import draw_bounding_boxes

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for n, batch in zip(range(batches), datamodule.train_dataloader()):
        tiles = [draw_bounding_boxes(image, boxes[valid], colors="red", width=1) if valid.any() else image
                 for image, boxes, valid in zip(batch["images"], batch["boxes"], batch["valid"])]
        written.append(_save_grid(tiles, folder / f"batch_{n:03d}.png"))
    return written


# ------------------------------------------------------------------------------------ entry points
def eval_view(dataset: Dataset, datamodule) -> Dataset:
    """The leaves of a (training) dataset through the evaluation transform: what training sees, unaugmented."""
    from torch.utils.data import ConcatDataset

    from .training.reliability import leaf_datasets

    transforms = build_transforms(False, datamodule.hparams.min_size, datamodule.hparams.max_size)
    leaves = []
    for leaf in leaf_datasets(dataset):
        view = copy.copy(leaf)
        view.transforms = transforms
        leaves.append(view)
    return leaves[0] if len(leaves) == 1 else ConcatDataset(leaves)


def warn_low_coverage(datamodule, config: RetinaNetConfig, config_hint: str = "CONFIG") -> str | None:
    """The one-line warning `fit` prints when the train split's coverage is below 0.95, else None."""
    view = eval_view(datamodule.train_dataset, datamodule)
    subset = Subset(view, draw_subset(len(view), WARNING_IMAGES, seed=0).tolist())
    records = box_records(subset, config, batch_size=datamodule.batch_size, size_divisible=datamodule.size_divisible,
                          progress=False)
    value = _share(records.best_iou >= config.fg_iou)
    if value is None or value >= COVERAGE_WARNING:
        return None
    return (f"warning: only {value:.0%} of the training boxes (on {records.images} images) have an anchor at IoU >= "
            f"{config.fg_iou}; see `detector check-data --config {config_hint} --out DIR` for an anchor suggestion")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]) +
                                     "\n\nAny other --section.key VALUE is an override of the training config.")
    parser.add_argument("--config", required=True, help="a training config (YAML), as scripts/train.py fit --config")
    parser.add_argument("--split", default="train", choices=("train", "val"), help="the split to check")
    parser.add_argument("--out", required=True, help="the folder for check.json and the figures")
    parser.add_argument("--browse", type=int, default=0, metavar="N", help="also draw N augmented training batches")
    parser.add_argument("--max-images", type=int, help="check at most this many images (drawn, seed 0)")
    parser.add_argument("--suggest-boxes", type=int, default=1000, help="boxes the anchor search scores on")
    return parser


def parse_training_config(config: str, overrides: list[str]):
    """(DetectionDataModule, RetinaNetConfig) of a training config and overrides, by the training parser."""
    from jsonargparse import ActionConfigFile, ArgumentError

    from .cli import training_parser
    from .data.errors import DatasetError
    from .training.datamodule import DetectionDataModule

    parser = training_parser()
    parser.add_argument("--config", action=ActionConfigFile)
    try:
        cfg = parser.parse_args(["--config", config, *overrides])
    except ArgumentError as err:
        raise DatasetError(config, f"bad config or override ({str(err).splitlines()[0]})") from None
    data = cfg.data.as_dict() if hasattr(cfg.data, "as_dict") else dict(cfg.data)
    detector = cfg.model.detector.as_dict() if hasattr(cfg.model.detector, "as_dict") else dict(cfg.model.detector)
    return DetectionDataModule(**data), detector


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    from .cli import one_line_errors
    from .quiet import silence_third_party_noise

    silence_third_party_noise()
    args, overrides = build_parser(prog).parse_known_args(argv)
    with one_line_errors():
        datamodule, detector = parse_training_config(args.config, overrides)
        datamodule.prepare_data()
        datamodule.setup("fit" if args.split == "train" else "validate")
        detector["num_classes"] = detector.get("num_classes") or datamodule.num_classes
        config = RetinaNetConfig.from_dict(detector)
        dataset = eval_view(datamodule.train_dataset, datamodule) if args.split == "train" else datamodule.val_dataset
        if args.max_images is not None:
            dataset = Subset(dataset, draw_subset(len(dataset), args.max_images, seed=0).tolist())
        records = box_records(dataset, config, batch_size=datamodule.val_batch_size,
                              num_workers=datamodule.num_workers, size_divisible=datamodule.size_divisible)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        report = {"split": args.split, "min_size": datamodule.hparams.min_size,
                  "max_size": datamodule.hparams.max_size, **summary(records, datamodule.class_names, config)}
        report["suggestion"] = suggest_anchors(records, config, args.suggest_boxes)
        (out / "check.json").write_text(json.dumps(report, indent=1))
        draw_label_stats(records, datamodule.class_names, config, out / "label_stats.png")
        draw_worst(dataset, records, config, out / "worst_boxes.png")
        browsed = browse(datamodule, args.browse, out / "browse") if args.browse else []
    s = report["suggestion"]
    print(f"{args.split}: {report['images']} images, {report['boxes']} boxes; coverage (best anchor IoU >= "
          f"{config.fg_iou}) {_pct(report['coverage'])}, {report['rescued_by_low_quality_only']} boxes rescued only by "
          f"the low-quality match, {report['without_positive_anchor']} without a positive anchor; negatives per "
          f"positive anchor {report['negatives_per_positive'] or float('nan'):.0f}")
    print(f"anchor suggestion: coverage {_pct(s['before'])} -> {_pct(s['after'])} on {s['boxes_searched']} boxes "
          f"with\n{s['yaml']}")
    print(f"wrote {out / 'check.json'}, label_stats.png, worst_boxes.png" +
          (f", {len(browsed)} batches in {out / 'browse'}" if browsed else ""))
    return 0


def _pct(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.1%}"


if __name__ == "__main__":
    sys.exit(main())
