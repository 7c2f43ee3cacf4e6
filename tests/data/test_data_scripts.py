"""The data scripts run as `python scripts/x.py` from the repository root (subprocesses)."""

from __future__ import annotations

import subprocess
import sys

from pycocotools.coco import COCO

from tests.data.fixtures import REPO


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_make_synthetic_writes_both_splits(tmp_path):
    out = tmp_path / "syn"
    result = _run("scripts/make_synthetic.py", "--out", str(out), "--num-train", "4", "--num-val", "2", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "images/s" in result.stdout
    for split, n in (("train", 4), ("val", 2)):
        gt = COCO(str(out / f"{split}.json"))
        assert len(gt.getImgIds()) == n and len(gt.getCatIds()) == 5


def test_input_error_is_one_line_without_traceback(tmp_path):
    result = _run("scripts/voc_to_coco.py", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "x.json"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr and "missing" in result.stderr
