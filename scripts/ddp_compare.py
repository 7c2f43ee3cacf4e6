"""Train the same tiny synthetic run on 1 CPU process (batch B) and on P processes with DDP (batch B / P).

    python scripts/ddp_compare.py --data-root /tmp/odd --steps 60 --seeds 0 1 2 --out docs/reliability/ddp.json
    python scripts/ddp_compare.py --data-root /tmp/odd --steps 60 --seeds 0 --freeze-bn --out /tmp/ddp_frozen.json

Both runs are scripts/train.py with configs/synthetic.yaml and a tiny model (ResNet-18-FPN, 16 channels,
1 head conv, 128 px, AdamW lr 0.004 at batch 16 (scaled to the global batch), no warm-up),
validated once at the end; a StepRecorder (scripts/run_probes.py) writes every step of
every process. Printed per seed: val AP / AP50 / AR100 of each, and the largest difference between
the one-process loss and the mean of the DDP processes' losses over the first 10 steps and over all
steps. --data-root is generated when missing (16 training and 7 validation images: the validation
sampler must pad).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from detector.data.synthetic import make_synthetic, synthetic_exists

TINY = ["--model.detector.fpn_channels", "16", "--model.detector.head_convs", "1", "--data.min_size", "128",
        "--data.max_size", "128", "--data.num_workers", "0", "--trainer.precision", "32-true",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.num_sanity_val_steps", "0", "--checkpoint.monitor", "null", "--checkpoint.save_top_k", "0",
        "--trainer.accelerator", "cpu", "--model.optimizer", "adamw", "--model.lr", "0.004",
        "--model.warmup_steps", "0", "--trainer.log_every_n_steps", "1"]


def make_data(root: Path) -> Path:
    if not synthetic_exists(root):
        make_synthetic(root, num_train=16, num_val=7, seed=1, image_size=128, mean_objects=3, max_objects=5,
                       min_object_size=12, max_object_size=40, num_distractors=1, num_lines=2, num_blobs=2)
    return root


def train(root: Path, run_dir: Path, steps: int, devices: int, batch_size: int, seed: int, extra=()) -> list[Path]:
    """One run; returns its StepRecorder files (one per process)."""
    record = run_dir / "steps.jsonl"
    callback = json.dumps({"class_path": "run_probes.StepRecorder",
                           "init_args": {"path": str(record)}})
    args = ["fit", "--config", str(REPO / "configs/synthetic.yaml"), "--data.root", str(root), *TINY,
            "--seed_everything", str(seed), "--trainer.max_steps", str(steps), "--trainer.val_check_interval",
            str(steps), "--data.batch_size", str(batch_size), "--trainer.devices", str(devices),
            "--trainer.default_root_dir", str(run_dir), "--trainer.logger.init_args.save_dir", str(run_dir),
            "--checkpoint.dirpath", str(run_dir / "ckpt"), "--trainer.callbacks+=" + callback, *extra]
    if devices > 1:
        args += ["--trainer.strategy", "ddp"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(REPO / "scripts/train.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: training failed ({run_dir}):\n{proc.stderr[-3000:]}")
    return [record] if devices == 1 else [Path(f"{record}.rank{r}") for r in range(devices)]


def read(path: Path) -> tuple[list[dict], dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in rows if "step" in r], next(r for r in rows if "validation_at" in r)


def compare(root: Path, work: Path, steps: int, seed: int, processes: int = 2, batch: int = 4, extra=()) -> dict:
    one = read(train(root, work / f"one_{seed}", steps, 1, batch, seed, extra)[0])
    many = [read(p) for p in train(root, work / f"ddp_{seed}", steps, processes, batch // processes, seed, extra)]
    diffs = [abs(a["loss"] - sum(m[0][k]["loss"] for m in many) / processes) for k, a in enumerate(one[0])]
    same_batches = all(sorted(sum((m[0][k]["image_ids"] for m in many), [])) == sorted(a["image_ids"])
                       and sum(m[0][k]["pixels"] for m in many) == a["pixels"] for k, a in enumerate(one[0]))
    pick = ("val/AP", "val/AP50", "val/AR100")
    return {"seed": seed, "one_process": {k: one[1]["metrics"][k] for k in pick},
            "ddp": {k: many[0][1]["metrics"][k] for k in pick},
            "ap_difference": many[0][1]["metrics"]["val/AP"] - one[1]["metrics"]["val/AP"],
            "same_global_batches": same_batches,
            "evaluated_images": {"one_process": len(one[1]["evaluated_image_ids"]),
                                 "ddp_per_process": [len(m[1]["evaluated_image_ids"]) for m in many]},
            "max_loss_difference_first_10_steps": max(diffs[:10]), "max_loss_difference": max(diffs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4, help="the global batch")
    parser.add_argument("--freeze-bn", action="store_true", help="FrozenBatchNorm2d in the backbone")
    parser.add_argument("--out", help="write the results here as JSON")
    args = parser.parse_args(argv)
    extra = ["--model.detector.freeze_bn", "true"] if args.freeze_bn else []
    root = make_data(Path(args.data_root))
    results = []
    with tempfile.TemporaryDirectory(prefix="ddp-compare-") as work:
        for seed in args.seeds:
            results.append(compare(root, Path(work), args.steps, seed, args.processes, args.batch_size, extra))
            print(json.dumps(results[-1]), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"command": "python scripts/ddp_compare.py " + " ".join(
            argv if argv is not None else sys.argv[1:]), "steps": args.steps, "freeze_bn": args.freeze_bn,
            "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
