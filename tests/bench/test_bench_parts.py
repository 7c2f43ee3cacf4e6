"""scripts/bench_parts.py: each entry times two ways of computing the same thing, and they agree."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path, *args):
    out = tmp_path / "parts.json"
    proc = subprocess.run([sys.executable, "scripts/bench_parts.py", "--out", str(out), "--rounds", "1", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


def test_parts_agree_and_every_entry_is_timed(tmp_path):
    parts = _run(tmp_path, "--boxes", "20")
    assert parts["matcher_20_boxes"]["same"] is True  # culled matches == dense matches
    assert parts["matcher_20_boxes"]["anchors"] == 49104
    assert parts["topk"]["same"] is True  # top_pairs == flatten().topk()
    assert parts["softplus"]["max_abs_error_vs_float64"] < 1e-6
    assert "focal" not in parts  # only with --focal
    for name in ("matcher_20_boxes", "softplus", "topk"):
        assert parts[name]["ratio"] > 0 and parts[name]["rounds"] == (20 if name == "softplus" else 1)


@pytest.mark.slow  # compiles the fast loss and runs the rule on a 36 M-logit block
def test_focal_entry_times_the_rule_against_the_fast_path(tmp_path):
    parts = _run(tmp_path, "--boxes", "8", "--focal")
    assert parts["focal"]["loss_sum_relative_difference"] < 1e-5  # the same loss, rule or fast path
    assert parts["focal"]["shape"] == [8, 49104, 91]
    assert parts["focal"]["ratio"] > 0 and parts["focal"]["rounds"] == 1


def test_bad_arguments_are_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "scripts/bench_parts.py", "--out", str(tmp_path / "p.json"), "--boxes", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "error: --boxes and --rounds must be positive" in proc.stderr and "Traceback" not in proc.stderr
