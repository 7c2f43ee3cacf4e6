"""Fine-tuning against training from scratch on a small synthetic task (docs/finetuning.md).

    python scripts/finetune_experiment.py --out runs/finetune_experiment [--steps 150] [--lrs 0.0005 0.002] [--seeds 0 1] \
        [--model.detector.fpn_channels 32 ...]   # any other argument: an override of every training run

1. The source: the synthetic shapes restricted to circle, square and triangle (the other shapes'
   boxes removed), seed 1, trained for --source-steps.
2. The target: another draw (seed 2) with all five shapes, named Circle, Square, Triangle (case
   differs: their class rows are copied), plus and donut (new classes: re-initialised).
3. For each seed and lr: the target trained --steps from the source (`--model.init_from`) and from
   scratch, at equal settings; val AP every --eval-every steps (CSVLogger).
Writes OUT/results.json and prints the table docs/finetuning.md holds.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from detector.cli import run_cli
from detector.data.synthetic import make_synthetic

SYNTHETIC = dict(image_size=128, mean_objects=3, max_objects=5, min_object_size=12, max_object_size=40,
                 num_distractors=1, num_lines=2, num_blobs=2)
TARGET_NAMES = {"circle": "Circle", "square": "Square", "triangle": "Triangle", "cross": "plus", "ring": "donut"}
SOURCE_CLASSES = ("circle", "square", "triangle")


def _rewrite(path: Path, keep: tuple[str, ...] | None = None, rename: dict[str, str] | None = None) -> None:
    data = json.loads(path.read_text())
    if keep is not None:
        ids = {c["id"] for c in data["categories"] if c["name"] in keep}
        data["categories"] = [c for c in data["categories"] if c["id"] in ids]
        data["annotations"] = [a for a in data["annotations"] if a["category_id"] in ids]
    for c in data["categories"]:
        c["name"] = (rename or {}).get(c["name"], c["name"])
    path.write_text(json.dumps(data))


def _fit(root: Path, run: Path, steps: int, lr: float, seed: int, eval_every: int, *extra: str) -> None:
    args = ["fit", "--config", "configs/synthetic.yaml", "--seed_everything", str(seed),
            "--data.dataset", "coco", "--data.root", str(root),
            "--data.train_ann", "train.json", "--data.val_ann", "val.json",  # relative to data.root
            "--data.train_images", "images", "--data.val_images", "images",
            "--data.min_size", "128", "--data.max_size", "128", "--data.num_workers", "0",
            "--model.lr", str(lr), "--model.warmup_steps", "20", "--model.milestones", "[1000000]",
            "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(eval_every),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.callbacks", "[]", "--trainer.default_root_dir", str(run),
            "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.init_args.save_dir", str(run), "--trainer.logger.init_args.name", "log",
            "--checkpoint.dirpath", str(run / "ckpt"), *extra]
    if run_cli(args) != 0:
        raise SystemExit(f"training {run} failed")


def _ap_over_steps(run: Path) -> dict[int, float]:
    rows = list(csv.DictReader(next(run.rglob("metrics.csv")).open()))
    return {int(r["step"]) + 1: float(r["val/AP"]) for r in rows if r.get("val/AP")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--source-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.0005, 0.002])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--num-train", type=int, default=300)
    parser.add_argument("--num-val", type=int, default=100)
    args, overrides = parser.parse_known_args(argv)
    out = Path(args.out)
    source_data, target_data = out / "source_data", out / "target_data"
    if not (source_data / "train.json").is_file():
        make_synthetic(source_data, num_train=args.num_train, num_val=args.num_val, seed=1, **SYNTHETIC)
        for split in ("train", "val"):
            _rewrite(source_data / f"{split}.json", keep=SOURCE_CLASSES)
    if not (target_data / "train.json").is_file():
        make_synthetic(target_data, num_train=args.num_train, num_val=args.num_val, seed=2, **SYNTHETIC)
        for split in ("train", "val"):
            _rewrite(target_data / f"{split}.json", rename=TARGET_NAMES)
    source_ckpt = out / "source" / "ckpt" / "last.ckpt"
    if not source_ckpt.is_file():
        _fit(source_data, out / "source", args.source_steps, 0.002, 0, args.source_steps, *overrides)
    results = {"source_ap": _ap_over_steps(out / "source"), "runs": []}
    for lr in args.lrs:  # every seed of one lr before the next lr: a cut-short grid still has two seeds
        for seed in args.seeds:
            for start in ("finetune", "scratch"):
                run = out / f"{start}_lr{lr:g}_seed{seed}"
                if not list(run.rglob("metrics.csv")):
                    extra = ["--model.init_from", str(source_ckpt)] if start == "finetune" else []
                    _fit(target_data, run, args.steps, lr, seed, args.eval_every, *overrides, *extra)
                results["runs"].append({"start": start, "lr": lr, "seed": seed, "ap": _ap_over_steps(run)})
    (out / "results.json").write_text(json.dumps(results, indent=1))
    steps = sorted({s for r in results["runs"] for s in r["ap"]})
    print("| start | lr | seed | " + " | ".join(f"AP @ {s}" for s in steps) + " |")
    print("|---|---:|---:|" + "---:|" * len(steps))
    for r in results["runs"]:
        print(f"| {r['start']} | {r['lr']:g} | {r['seed']} | " + " | ".join(f"{r['ap'].get(s, float('nan')):.3f}"
                                                                         for s in steps) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
