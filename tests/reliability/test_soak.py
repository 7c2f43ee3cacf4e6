"""Memory stays flat over a long run: RSS sampled along the steps must not climb in the second half.

The full soak (2,000 steps) is `python scripts/soak.py --steps 2000 ...` (docs/reliability.md); CI runs
a short one through the same script: a tiny model at 64 px, validation (COCO evaluation), atomic
checkpoints and TensorBoard logging included.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from .helpers import REPO, script_env

STEPS = 240
#: MB per 1,000 steps over the second half. The full 2,000-step run measured SOAK_SLOPE (docs); samples of
#: a flat run still move by a few tens of MB (allocator caches, a validation), which over only 120 steps
#: reads as up to ~SHORT_NOISE MB / 1,000 steps. A leak of 1 MB a step (a kept graph, an accumulator
#: never reset) gives 1,000.
MAX_SLOPE = 400


@pytest.mark.slow
def test_rss_is_flat_over_the_second_half(tmp_path):
    out = tmp_path / "rss.csv"
    proc = subprocess.run(
        [sys.executable, "scripts/soak.py", "--steps", str(STEPS), "--every", "20", "--val-every", "120",
         "--workers", "0", "--batch-size", "2", "--data-root", str(tmp_path / "data"), "--run-dir", str(tmp_path / "run"),
         "--out", str(out), "--max-slope", str(MAX_SLOPE)],
        cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=600)
    summary = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else None
    assert proc.returncode == 0, (summary, proc.stderr[-2000:])
    rows = list(csv.DictReader(open(out)))
    assert [int(r["step"]) for r in rows] == list(range(0, STEPS + 1, 20))
    assert summary["second_half_slope_mb_per_1000_steps"] <= MAX_SLOPE
    assert summary["max_mb"] < 4096  # a tiny model: a few hundred MB of torch + the model, never GBs
