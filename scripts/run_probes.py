#!/usr/bin/env python
"""Callbacks that record a training run for the reliability checks (scripts/ddp_compare.py,
scripts/soak.py and tests/reliability): not part of the package.

Used as LightningCLI callbacks, e.g. ``--trainer.callbacks+='{"class_path": "run_probes.StepRecorder",
"init_args": {"path": "steps.jsonl"}}'`` from a script in this folder (which Python puts on sys.path).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import lightning as L


class StepRecorder(L.Callback):
    """Appends one JSON line per training batch to `path` (one file per process: `path`.rank<r>).

    A row holds the step, epoch, batch index, image ids, the sum of the batch's pixels (a
    fingerprint of the augmentation) and the loss; after each validation, one row with the val/
    metrics and the image ids that were evaluated. What the resume and DDP checks compare.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._world, self._rank = 1, 0

    def setup(self, trainer, pl_module, stage) -> None:
        self._world, self._rank = trainer.world_size, trainer.global_rank

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"].item() if isinstance(outputs, dict) and "loss" in outputs else None
        self._write({"step": trainer.global_step, "epoch": trainer.current_epoch, "batch_idx": batch_idx,
                     "image_ids": batch["image_ids"].tolist(), "pixels": int(batch["images"].long().sum()),
                     "loss": loss})

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        accumulator = getattr(pl_module, "accumulator", None)
        self._write({"validation_at": trainer.global_step, "metrics": metrics,
                     "evaluated_image_ids": accumulator.image_ids if accumulator is not None else None})

    def _write(self, row: dict) -> None:
        path = self.path if self._world == 1 else f"{self.path}.rank{self._rank}"
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process now (Linux /proc; elsewhere this process's peak, from getrusage)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        if pid != "self":
            return 0
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def child_pids() -> list[int]:
    """The direct children of this process (DataLoader workers), from /proc (Linux; else none)."""
    pids = []
    for task in Path("/proc/self/task").glob("*"):
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return sorted(set(pids))


class RSSMonitor(L.Callback):
    """Writes `step,rss_mb,workers_mb,seconds` to the CSV `path` every `every` training steps and at step 0.

    rss_mb is the training process (rank 0); workers_mb the sum over its child processes
    (DataLoader workers; shared pages count in each).
    """

    def __init__(self, path: str, every: int = 100) -> None:
        self.path, self.every = path, every
        self._start = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._start = time.monotonic()
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w") as f:
                f.write("step,rss_mb,workers_mb,seconds\n")
            self._sample(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.is_global_zero and trainer.global_step % self.every == 0:
            self._sample(trainer.global_step)

    def _sample(self, step: int) -> None:
        with open(self.path, "a") as f:
            workers = sum(rss_bytes(pid) for pid in child_pids())
            f.write(f"{step},{rss_bytes() / 2**20:.1f},{workers / 2**20:.1f},{time.monotonic() - self._start:.1f}\n")
