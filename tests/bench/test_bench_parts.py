"""scripts/bench_parts.py: each entry times two ways of computing the same thing, and they agree."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_parts_agree_and_every_entry_is_timed(tmp_path):
    out = tmp_path / "parts.json"
    proc = subprocess.run([sys.executable, "scripts/bench_parts.py", "--out", str(out), "--boxes", "20", "--rounds", "1",
                           "--focal-against", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    parts = json.loads(out.read_text())
    assert parts["matcher_20_boxes"]["same"] is True  # culled matches == dense matches
    assert parts["matcher_20_boxes"]["anchors"] == 49104
    assert parts["topk"]["same"] is True  # top_pairs == flatten().topk()
    assert parts["softplus"]["max_abs_error_vs_float64"] < 1e-6
    assert parts["focal_against_HEAD"]["loss_sum_relative_difference"] < 1e-5  # the same loss, eager or compiled
    for name in ("matcher_20_boxes", "softplus", "topk", "focal_against_HEAD"):
        assert parts[name]["ratio"] > 0 and parts[name]["rounds"] == (20 if name == "softplus" else 1)


def test_unknown_revision_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "scripts/bench_parts.py", "--out", str(tmp_path / "p.json"), "--boxes", "8",
                           "--rounds", "1", "--focal-against", "no-such-revision"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: git show no-such-revision") and "Traceback" not in proc.stderr
