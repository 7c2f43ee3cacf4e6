"""Soak test: train many steps of the synthetic config and record memory (RSS) along the way.

    python scripts/soak.py --steps 2000 --every 100 --out docs/figures/soak_rss.csv
    python scripts/soak.py --steps 300 --every 20 --out /tmp/soak.csv --max-slope 30
    python scripts/soak.py --full --steps 2000 --every 100 --data-root data/synthetic --out soak_full.csv

With --full: configs/synthetic.yaml as it is (model, image size, batch, precision, workers) on
--data-root (which must exist, e.g. data/synthetic from `make train`); --size, --batch-size and
--workers are ignored.

A tiny model (ResNet-18-FPN, 16 channels, 1 head conv) at --size px (64 by default) on a small
synthetic set generated into --data-root (kept between runs), so that thousands of steps fit in minutes
on a CPU; everything else is configs/synthetic.yaml: the training loop, validation with COCO
evaluation (every --val-every steps), checkpoints (every --val-every steps, atomic), TensorBoard logs,
--workers DataLoader worker processes. The CSV holds step, rss_mb (the training process),
workers_mb (its DataLoader workers) and seconds; a summary JSON is written next to it.

Printed: RSS at the first and last sample and its maximum, and the least-squares slope of RSS over
the second half of the steps in MB per 1,000 steps. With --max-slope, the exit status is 1 when that
slope is above it (a leak), 0 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from detector.cli import run_cli
from detector.data.synthetic import make_synthetic, synthetic_exists


def summarize(csv_path: Path, column: str = "rss_mb") -> dict:
    """RSS at start, end, maximum, and the slope (MB / 1,000 steps) over the second half of the steps."""
    with open(csv_path) as f:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    steps = np.array([r["step"] for r in rows])
    rss = np.array([r[column] for r in rows])
    half = steps >= steps.max() / 2
    slope = float(np.polyfit(steps[half], rss[half], 1)[0] * 1000) if half.sum() >= 2 else float("nan")
    return {"samples": len(rows), "steps": int(steps.max()), "start_mb": float(rss[0]), "end_mb": float(rss[-1]),
            "max_mb": float(rss.max()), "second_half_slope_mb_per_1000_steps": round(slope, 2),
            "workers_end_mb": float(rows[-1].get("workers_mb", 0.0)), "seconds": float(rows[-1]["seconds"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=100, help="sample RSS every this many steps")
    parser.add_argument("--size", type=int, default=64, help="image size (short and long side)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    parser.add_argument("--val-every", type=int, default=500, help="validate and checkpoint every this many steps")
    parser.add_argument("--data-root", default=None, help="synthetic set (generated when missing; default: a temp dir)")
    parser.add_argument("--run-dir", default=None, help="logs and checkpoints (default: a temp dir)")
    parser.add_argument("--out", required=True, help="the RSS CSV")
    parser.add_argument("--full", action="store_true",
                        help="the synthetic config's own model, size, batch, precision and workers")
    parser.add_argument("--max-slope", type=float, default=None, help="fail above this many MB per 1,000 steps")
    args = parser.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="soak-")
    root = Path(args.data_root or Path(tmp.name) / "data")
    if args.full and not synthetic_exists(root):
        print(f"error: {root}: no synthetic dataset there (make one: python scripts/make_synthetic.py --out {root})",
              file=sys.stderr)
        return 2
    if not synthetic_exists(root):
        make_synthetic(root, num_train=64, num_val=16, seed=0, image_size=128, mean_objects=3, max_objects=5,
                       min_object_size=12, max_object_size=40, num_distractors=1, num_lines=2, num_blobs=2)
    run_dir = Path(args.run_dir or Path(tmp.name) / "run")
    out = Path(args.out)
    monitor = json.dumps({"class_path": "run_probes.RSSMonitor",
                          "init_args": {"path": str(out), "every": args.every}})
    if args.full:
        shape = []  # configs/synthetic.yaml as it is
    else:
        shape = ["--model.detector.fpn_channels", "16", "--model.detector.head_convs", "1",
                 "--data.min_size", str(args.size), "--data.max_size", str(args.size), "--data.size_divisible", "64",
                 "--data.batch_size", str(args.batch_size), "--data.num_workers", str(args.workers),
                 "--trainer.precision", "32-true"]
    rc = run_cli([
        "fit", "--config", str(REPO / "configs/synthetic.yaml"), "--data.root", str(root), *shape,
        "--trainer.max_steps", str(args.steps),
        "--trainer.val_check_interval", str(args.val_every), "--trainer.check_val_every_n_epoch", "null",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(run_dir),
        "--trainer.logger.init_args.save_dir", str(run_dir), "--checkpoint.dirpath", str(run_dir / "ckpt"),
        "--checkpoint.every_n_train_steps", str(args.val_every), "--trainer.callbacks+=" + monitor,
    ])
    if rc != 0:
        return rc
    summary = summarize(out)
    summary.update({"command": " ".join(["python", "scripts/soak.py", *(argv if argv is not None else sys.argv[1:])]),
                    "full": args.full, **({"config": "configs/synthetic.yaml as it is"} if args.full else
                                         {"size": args.size, "batch_size": args.batch_size, "workers": args.workers})})
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    if args.max_slope is not None and not summary["second_half_slope_mb_per_1000_steps"] <= args.max_slope:
        print(f"error: RSS grows {summary['second_half_slope_mb_per_1000_steps']} MB per 1000 steps over the second "
              f"half (limit {args.max_slope})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
