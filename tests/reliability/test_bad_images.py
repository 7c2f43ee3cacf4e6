"""One bad image never costs a training run: the scan at setup skips and reports, or stops on request."""

from __future__ import annotations

import json
import shutil

import pytest

from detector.cli import run_cli
from tests.conftest import write_tiny_synthetic

from .helpers import corrupt_after_scan, fit_args


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """16 training images of which 2 are unreadable (0 bytes, truncated), 8 validation images."""
    root = write_tiny_synthetic(tmp_path_factory.mktemp("damaged"), num_train=16, num_val=8)
    (root / "images/train/000003.jpg").write_bytes(b"")
    data = (root / "images/train/000011.jpg").read_bytes()
    (root / "images/train/000011.jpg").write_bytes(data[: len(data) // 3])
    return root


def test_fit_skips_unreadable_images_and_lists_them_in_the_run_folder(damaged, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_cli(fit_args(damaged, run_dir, "--trainer.max_steps", 2, "--trainer.limit_val_batches", 0,
                            "--checkpoint.monitor", "null", "--checkpoint.save_top_k", 0)) == 0
    lines = [l for l in capsys.readouterr().err.splitlines() if "unreadable" in l]
    assert len(lines) == 1, lines
    assert lines[0].startswith("2 of 16 training images unreadable, skipped: see ") and lines[0].endswith(
        "data_report.json")
    report_file = lines[0].rsplit("see ", 1)[1]
    assert report_file.startswith(str(run_dir))
    report = json.loads(open(report_file).read())
    (train,) = report["scan"]["train"]
    assert train["num_images"] == 16 and train["num_unreadable"] == 2
    assert sorted(b["file"].rsplit("/", 1)[1] for b in train["unreadable"]) == ["000003.jpg", "000011.jpg"]
    assert report["scan"]["val"][0]["num_unreadable"] == 0 and report["on_bad_image"] == "skip"
    assert (run_dir / "ckpt" / "last.ckpt").is_file()  # the run trained


def test_fit_with_on_bad_image_error_stops_with_one_line(damaged, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(fit_args(damaged, tmp_path / "run", "--data.on_bad_image", "error", "--trainer.max_steps", 2))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith("error: ") and "000003.jpg: cannot read image" in err[0]
    assert "(1 more unreadable train images)" in err[0]


def test_an_image_that_goes_bad_mid_run_is_skipped_in_a_worker_and_reported(tiny_synthetic, tmp_path, capsys):
    root = tmp_path / "syn"
    shutil.copytree(tiny_synthetic, root)
    bad = corrupt_after_scan(root)
    run_dir = tmp_path / "run"
    assert run_cli(fit_args(root, run_dir, "--trainer.max_steps", 8, "--trainer.limit_val_batches", 0,
                            "--checkpoint.monitor", "null", "--checkpoint.save_top_k", 0,
                            "--data.num_workers", 1)) == 0  # 8 steps of 4 from 16 images: every image read twice
    assert "unreadable, skipped" not in capsys.readouterr().err  # the scan (from the cache) found nothing
    (report_file,) = run_dir.rglob("data_report.json")
    report = json.loads(report_file.read_text())
    assert report["scan"]["train"][0]["num_unreadable"] == 0
    assert report["skipped_during_run"] == [{"file": str(bad), "times": 2}]
    assert (run_dir / "ckpt" / "last.ckpt").is_file()
