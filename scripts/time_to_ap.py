#!/usr/bin/env python
"""time_to_ap: wall time for a training to reach val AP 0.50 and 0.55, validation time counted.

    python scripts/time_to_ap.py --out docs/bench/time_to_ap_cpu.json \\
        --variant default= --variant "ema=--model.ema_decay 0.998" --seeds 0 1 \\
        --datasets synthetic synthetic_dense

Every (dataset, variant, seed) is one `scripts/train.py fit --config CONFIG` in its own process,
run one after the other (side by side in one invocation); a variant is NAME=OVERRIDES, the
overrides being command-line settings of the training config. Datasets (detector/bench/
time_to_ap.py) are generated when missing. Writes one JSON object: "time_to_ap" (an entry per run:
seconds and steps to each AP threshold, final and best AP, validation seconds, the curve) and
"meta" (machine, command). Prints a markdown table of the runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from detector.bench.runner import machine  # noqa: E402
from detector.bench.time_to_ap import (  # noqa: E402
    DATASETS, THRESHOLDS, compare_raw_and_average, ensure_dataset, raw_weights_rows, run_one, summarize)


def variant(text: str) -> tuple[str, list[str]]:
    name, sep, overrides = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--variant takes NAME=OVERRIDES (overrides may be empty), got {text!r}")
    return name, shlex.split(overrides)


def reached_text(entry: dict, level: str) -> str:
    step, seconds = entry["steps_to_ap"][level], entry["seconds_to_ap"][level]
    if step is None:
        return "not reached"
    return f"{'-' if seconds is None else f'{seconds:.0f}'} (step {step})"


def table(entries: list[dict], thresholds) -> str:
    head = " | ".join(f"s to AP {t:.2f}" for t in thresholds)
    lines = [f"| dataset | variant | seed | {head} | final AP | validation s | wall s |",
             "|---|---|---|" + "---|" * (len(thresholds) + 3)]
    rows = []
    for e in entries:
        rows.append(e)
        if e.get("raw_weights"):  # the same training's raw weights: the recipe without the average
            rows.append({**e, **e["raw_weights"], "variant": f"{e['variant']} (raw weights)"})
    for e in rows:
        reached = " | ".join(reached_text(e, f"{t:.2f}") for t in thresholds)
        final = "-" if e["final_ap"] is None else f"{e['final_ap']:.3f}"
        lines.append(f"| {e['dataset']} | {e['variant']} | {e['seed']} | {reached} | {final} | "
                     f"{e['validation_s']:.0f} | {e['process_wall_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="JSON file to write (rewritten after every run)")
    p.add_argument("--config", type=Path, default=REPO / "configs/synthetic.yaml", help="training config")
    p.add_argument("--variant", type=variant, action="append", metavar="NAME=OVERRIDES",
                   help="a recipe to run (repeatable); default: the config as it is, named 'default'")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seed_everything of each run")
    p.add_argument("--datasets", nargs="+", default=["synthetic"], choices=sorted(DATASETS), help="what to train on")
    p.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS), help="val AP levels to time")
    p.add_argument("--num-images", type=int, default=None,
                   help="generate smaller train/val splits of this size (a check that it runs, not a measurement)")
    p.add_argument("--data-dir", type=Path, default=REPO, help="where the datasets' folders (data/...) are")
    p.add_argument("--runs", type=Path, default=REPO / "runs/time_to_ap", help="folder of the runs' logs and checkpoints")
    p.add_argument("--compare-raw", action="store_true",
                   help="after each run, evaluate the raw weights and the average of its step checkpoints "
                        "(EMA variants written with --checkpoint.filename {step}); offline, not timed")
    p.add_argument("--extra", default="", help="overrides added to every variant (e.g. '--trainer.max_steps 4')")
    p.add_argument("--table", type=Path, nargs="+", metavar="JSON",
                   help="print the table of these result files instead of training (raw weights' rows included)")
    a = p.parse_args(argv)
    if a.table:
        entries = [e for path in a.table for e in json.loads(path.read_text())["time_to_ap"]]
        for e in entries:
            if e.get("raw_vs_average") and "raw_weights" not in e:
                e["raw_weights"] = summarize(raw_weights_rows(e), a.thresholds)
        print(table(entries, a.thresholds))
        return 0
    if not a.config.is_file():
        p.error(f"--config {a.config}: no such file")
    variants = a.variant or [("default", [])]
    extra = shlex.split(a.extra)
    entries: list[dict] = []
    meta = {"machine": machine(), "config": str(a.config), "extra": extra,
            "command": " ".join(["python", *map(shlex.quote, sys.argv)])}
    for dataset in a.datasets:
        root = ensure_dataset(dataset, a.data_dir, num_train=a.num_images, num_val=a.num_images)
        for seed in a.seeds:
            for name, overrides in variants:
                print(f"[time_to_ap] {dataset} / {name} / seed {seed} ...", file=sys.stderr, flush=True)
                run_dir = a.runs / dataset / name / f"seed{seed}"
                entry = run_one(a.config, root, run_dir, [*overrides, *extra], seed, REPO, a.thresholds)
                if a.compare_raw:
                    entry["raw_vs_average"] = compare_raw_and_average(run_dir, a.config, root)
                    if entry["raw_vs_average"]:
                        entry["raw_weights"] = summarize(raw_weights_rows(entry), a.thresholds)
                entries.append({"dataset": dataset, "variant": name, "seed": seed, "overrides": overrides, **entry})
                a.out.parent.mkdir(parents=True, exist_ok=True)
                a.out.write_text(json.dumps({"time_to_ap": entries, "meta": meta}, indent=2) + "\n")
                print(f"[time_to_ap] done: {entry['seconds_to_ap']}, final AP {entry['final_ap']}", file=sys.stderr,
                      flush=True)
    print(table(entries, a.thresholds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
