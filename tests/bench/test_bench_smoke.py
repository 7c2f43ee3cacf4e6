"""scripts/bench.py --tiny: every entry is written with its measured values, a ratio and a target.

Structure only, never speed: the timings of a shared machine are not asserted (see docs/benchmarks.md).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from detector.bench.cases import TARGETS
from detector.bench.runner import ENTRIES

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_run_writes_every_entry_and_the_table(tmp_path):
    out, table = tmp_path / "bench.json", tmp_path / "bench.md"
    proc = subprocess.run([sys.executable, "scripts/bench.py", "--tiny", "--device", "cpu", "--out", str(out),
                           "--table", str(table)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert list(results) == [*ENTRIES, "meta"]
    for name in ENTRIES:
        entry = results[name]
        assert entry["ratio"] > 0 and entry["ratio"] == entry["ratio"], name  # positive, not NaN
        assert entry["target"] == (TARGETS[name] if TARGETS[name] is not None else "memory linear in boxes")
        assert isinstance(entry["met"], bool)
    # the faster COCO evaluation must give pycocotools' numbers
    assert results["coco_eval"]["identical"] is True
    assert results["coco_eval"]["max_abs_diff_12_numbers"] <= 1e-6
    # postprocess compares the two implementations' detections, not only their speed
    assert results["postprocess"]["same_detections"] is True
    assert results["meta"]["mode"] == "tiny" and results["meta"]["device"] == "cpu"
    lines = table.read_text().strip().splitlines()
    assert len(lines) == 2 + len(ENTRIES) and all(f"| {n} |" in table.read_text() for n in ENTRIES)
