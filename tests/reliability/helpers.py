"""Callbacks that inject faults into a real training run, and the run itself (in-process or not)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))  # the run probes live with the scripts that use them too

from run_probes import StepRecorder  # noqa: E402

#: A tiny model and short schedule on top of configs/synthetic.yaml (see tests/training/conftest.py).
TINY = [
    "--model.detector.fpn_channels", "16", "--model.detector.head_convs", "1",
    "--data.min_size", "128", "--data.max_size", "128", "--data.batch_size", "4", "--data.num_workers", "0",
    "--trainer.precision", "32-true", "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "1",
]


def fit_args(root, run_dir, *extra) -> list[str]:
    """`fit` arguments of a tiny run on the synthetic set at `root`, everything written under `run_dir`."""
    run_dir = Path(run_dir)
    return ["fit", "--config", str(REPO / "configs/synthetic.yaml"), "--data.root", str(root),
            "--trainer.default_root_dir", str(run_dir), "--trainer.logger.init_args.save_dir", str(run_dir),
            "--checkpoint.dirpath", str(run_dir / "ckpt"), *TINY, *map(str, extra)]


def callback_arg(cls: type, **init_args) -> str:
    """`--trainer.callbacks+=...` value that adds `cls(**init_args)` to the config's callbacks."""
    return "--trainer.callbacks+=" + json.dumps({"class_path": f"{cls.__module__}.{cls.__qualname__}",
                                                  "init_args": init_args})


def run_train_script(args: list[str], timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    """`python scripts/train.py ARGS` from the repository root (tests importable), waited for."""
    return subprocess.run([sys.executable, str(REPO / "scripts/train.py"), *args], cwd=REPO, env=script_env(),
                          capture_output=True, text=True, timeout=timeout, **popen)


def script_env(**extra: str) -> dict[str, str]:
    """The environment of a script subprocess: tests importable, one compute thread (as the tests)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "scripts")]), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", **extra)


def load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def all_finite(state_dict: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state_dict.values() if v.is_floating_point())


class CorruptHead(L.Callback):
    """At `step` (global step at batch start), fill the classification or box head's last bias with NaN.

    transient: put the original values back at that batch's end (a one-off bad batch); otherwise
    the weights stay broken (every later batch fails too).
    after_step: corrupt at the end of that batch instead, after the optimizer step and before the
    checkpoint callback runs (Lightning calls ModelCheckpoint last).
    """

    seen_skipped: int = -1  # the module's skipped_batches at the end of the last run in this process
    seen_step: int = -1  # and the trainer's global step

    def __init__(self, step: int, part: str = "cls", transient: bool = False, after_step: bool = False) -> None:
        self.step, self.part, self.transient, self.after_step = step, part, transient, after_step
        self._saved = None
        self._restored = False

    def _bias(self, pl_module) -> torch.nn.Parameter:
        head = pl_module.model.head
        return (head.classification_head.cls_logits if self.part == "cls" else head.regression_head.bbox_reg).bias

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.after_step:
            self._corrupt(trainer, pl_module)

    def _corrupt(self, trainer, pl_module) -> None:
        if trainer.global_step == self.step and self._saved is None:
            bias = self._bias(pl_module)
            self._saved = bias.detach().clone()
            with torch.no_grad():
                bias.fill_(math.nan)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.after_step:
            self._corrupt(trainer, pl_module)
        elif self.transient and self._saved is not None and not self._restored:
            with torch.no_grad():
                self._bias(pl_module).copy_(self._saved)
            self._restored = True

    def on_train_end(self, trainer, pl_module) -> None:
        type(self).seen_skipped = pl_module.skipped_batches
        type(self).seen_step = trainer.global_step


class PoisonGradient(L.Callback):
    """At `step`, after backward, set one gradient to +inf (the loss itself stays finite)."""

    seen_skipped: int = -1

    def __init__(self, step: int) -> None:
        self.step = step

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_step == self.step:
            p = next(p for p in pl_module.model.parameters() if p.grad is not None)
            p.grad[(0,) * p.grad.ndim] = math.inf

    def on_train_end(self, trainer, pl_module) -> None:
        type(self).seen_skipped = pl_module.skipped_batches


class Throttle(L.Callback):
    """Sleep `seconds` after each training batch: gives an outside observer time to kill the run."""

    def __init__(self, seconds: float = 0.2) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)


RecordSteps = StepRecorder  # per-step JSON lines, see scripts/run_probes.py


def wait_for_checkpoints(proc: subprocess.Popen, last, count: int, timeout: float = 240) -> None:
    """Poll until last.ckpt has been (re)written `count` times (each atomic write: a new inode and mtime)."""
    seen, deadline = set(), time.monotonic() + timeout
    while len(seen) < count:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it could be killed:\n{proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("no checkpoint in time")
        try:
            st = os.stat(last)
            seen.add((st.st_ino, st.st_mtime_ns))
        except FileNotFoundError:
            pass
        time.sleep(0.01)


def corrupt_after_scan(root: Path, split: str = "train", index: int = 0) -> Path:
    """Scan `split` of the synthetic set at root (the cache passes every image), then overwrite image
    `index` with garbage of the same size and mtime: the cache still passes it, so the run meets it."""
    from detector.data import COCODetection
    from detector.data.scan import scan_dataset

    scan_dataset(COCODetection(root / f"{split}.json", root / "images"), split=split, progress=False)
    name = json.loads((root / f"{split}.json").read_text())["images"][index]["file_name"]
    path = root / "images" / name
    size, st = path.stat().st_size, path.stat()
    path.write_bytes((b"not an image" * (size // 12 + 1))[:size])
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return path


class Payload:
    """Unpickling this creates the folder `marker`: the proof that a loader ran code from a file."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)
