"""A full disk, a file too large for the limit, a read-only folder: one line naming the path and the cause,
for training (the checkpoint write), export, predict and evaluate; the last good checkpoint is kept.

A full disk is a small tmpfs (needs `mount`, as root: skipped otherwise) or RLIMIT_FSIZE (always);
a read-only folder is a tmpfs mounted read-only (root's chmod does not stop root) or a path through a
file, which fails for root too.
"""

from __future__ import annotations

import resource
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

import detector
from tests.data.fixtures import write_image

from .helpers import REPO, fit_args, load, script_env

SHORT = ["--trainer.limit_val_batches", 0, "--checkpoint.monitor", "null", "--checkpoint.save_top_k", 0,
         "--checkpoint.every_n_train_steps", 1]


@contextmanager
def tmpfs(path, size: str, read_only: bool = False):
    """A tmpfs of `size` mounted at `path` for the block; skips the test where mounting is not possible."""
    if shutil.which("mount") is None:
        pytest.skip("needs the mount tool")
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def _limit_file_size(limit: int):
    def preexec() -> None:  # in the child: a write past `limit` bytes fails with EFBIG instead of killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def _run(args, limit: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=script_env(), capture_output=True,
                          text=True, timeout=600, preexec_fn=_limit_file_size(limit) if limit else None)


def _one_error(done) -> str:
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def first_run(tiny_synthetic, tmp_path_factory):
    """A run folder whose last.ckpt is step 2."""
    run = tmp_path_factory.mktemp("first")
    done = _run(["scripts/train.py", *fit_args(tiny_synthetic, run, "--trainer.max_steps", 2, *SHORT)])
    assert done.returncode == 0, done.stderr[-3000:]
    return run / "ckpt" / "last.ckpt"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["full disk", "file size limit"])
def test_a_checkpoint_that_cannot_be_written_is_one_line_and_the_last_good_one_is_kept(tiny_synthetic, first_run,
                                                                                       tmp_path, how):
    size = first_run.stat().st_size
    folder = tmp_path / "ckpt"

    def resume(limit=None):
        shutil.copy(first_run, folder / "last.ckpt")
        return _run(["scripts/train.py", *fit_args(tiny_synthetic, tmp_path / "run", "--trainer.max_steps", 4, *SHORT,
                                                   "--checkpoint.dirpath", folder, "--ckpt_path",
                                                   folder / "last.ckpt")], limit)

    if how == "full disk":  # room for the old checkpoint and half of the new one
        with tmpfs(folder, f"{size * 3 // 2 // 1024}k"):
            done, cause = resume(), "No space left on device"
            kept = load(folder / "last.ckpt")
            leftovers = sorted(p.name for p in folder.iterdir())
    else:
        folder.mkdir()
        done, cause = resume(limit=size // 2), "File too large"
        kept, leftovers = load(folder / "last.ckpt"), sorted(p.name for p in folder.iterdir())
    assert done.returncode == 2
    assert _one_error(done) == f"error: {folder / 'last.ckpt'}: cannot write: {cause}"
    assert kept["global_step"] == 2  # the last good checkpoint, whole
    assert leftovers == [".detector.lock", "last.ckpt"]  # no half-written temporary file


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    # 256 px: at 128 px or less P7 is 1x1 for every input and torch.export refuses a batch of one
    model = detector.build_retinanet(num_classes=2, backbone="resnet18", fpn_channels=16, head_convs=1,
                                     min_size=256, max_size=256)
    return detector.save_detector(model, tmp_path_factory.mktemp("model") / "m.ckpt")


def test_export_to_a_path_through_a_file_is_one_line_before_any_work(checkpoint, tmp_path):
    (tmp_path / "plain").write_text("a file, not a folder")
    done = _run(["scripts/export.py", "--checkpoint", checkpoint, "--format", "torch-export",
                 "--out", tmp_path / "plain" / "model.pt2"])
    assert done.returncode == 2
    assert _one_error(done) == f"error: {tmp_path / 'plain'}: cannot write: is a file, not a folder"
    assert "exporting" not in done.stderr  # refused before the model was even loaded


def test_export_past_the_file_size_limit_is_one_line(checkpoint, tmp_path):
    out = tmp_path / "model.pt2"
    done = _run(["scripts/export.py", "--checkpoint", checkpoint, "--format", "torch-export", "--out", out],
                limit=checkpoint.stat().st_size // 4)
    assert done.returncode == 2
    assert _one_error(done).startswith(f"error: {out}") and "File too large" in done.stderr


def test_predict_into_a_read_only_folder_is_one_line(checkpoint, tmp_path):
    write_image(tmp_path / "in" / "a.png", 40, 40)
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as folder:
        done = _run(["scripts/predict.py", "--checkpoint", checkpoint, "--input", tmp_path / "in", "--out", folder])
    assert done.returncode == 2
    assert _one_error(done) == f"error: {folder}: cannot write: Read-only file system"


def test_predict_drawings_past_the_file_size_limit_are_one_line_and_keep_the_detections(checkpoint, tmp_path):
    for i, name in enumerate(("a.png", "b.png")):  # random pixels: a drawing of ~270 KB
        pixels = np.random.default_rng(i).integers(0, 255, (300, 300, 3), dtype=np.uint8)
        (tmp_path / "in").mkdir(exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / "in" / name)
    out = tmp_path / "out"
    done = _run(["scripts/predict.py", "--checkpoint", checkpoint, "--input", tmp_path / "in", "--out", out,
                 "--batch-size", "1"], limit=100_000)
    assert done.returncode == 2
    assert _one_error(done) == f"error: {out / 'a.png.png'}: cannot write: File too large"
    assert (out / "detections.json").read_text().startswith("[")  # what was predicted before it is kept


def test_evaluate_with_out_through_a_file_is_one_line_before_the_evaluation(tmp_path):
    (tmp_path / "plain").write_text("x")
    done = _run(["scripts/evaluate.py", "--gt", tmp_path / "missing.json", "--results", tmp_path / "r.json",
                 "--out", tmp_path / "plain" / "sub" / "metrics.json"])
    assert done.returncode == 2
    assert _one_error(done) == f"error: {tmp_path / 'plain' / 'sub'}: cannot write: Not a directory"
