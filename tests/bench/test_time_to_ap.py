"""scripts/time_to_ap.py: the first validation reaching each AP level, and a CI-sized run writing its JSON.

Structure only, never speed: no wall time is asserted.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from detector.bench.time_to_ap import raw_weights_rows, summarize

REPO = Path(__file__).resolve().parents[2]
TINY = ("--trainer.max_steps 4 --trainer.val_check_interval 2 --model.detector.fpn_channels 16 "
        "--model.detector.head_convs 1 --data.min_size 128 --data.max_size 128 --data.batch_size 4 "
        "--data.num_workers 0 --trainer.precision 32-true --checkpoint.every_n_train_steps 2 "
        "--checkpoint.save_top_k -1 --checkpoint.monitor null --checkpoint.filename {step} "
        "--checkpoint.auto_insert_metric_name false")


def test_summarize_takes_the_first_validation_at_or_above_each_level():
    rows = [{"step": 100, "wall_s": 10.0, "val_s": 2.0, "AP": 0.3}, {"step": 200, "wall_s": 25.0, "val_s": 3.0, "AP": 0.5},
            {"step": 300, "wall_s": 40.0, "val_s": 3.0, "AP": 0.49}]
    entry = summarize(rows, thresholds=(0.5, 0.55))
    assert entry["seconds_to_ap"] == {"0.50": 25.0, "0.55": None}  # 0.5 reached at the second; 0.55 never
    assert entry["steps_to_ap"] == {"0.50": 200, "0.55": None}
    assert entry["final_ap"] == 0.49 and entry["best_ap"] == 0.5 and entry["validation_s"] == 8.0
    assert summarize([], thresholds=(0.5,))["seconds_to_ap"] == {"0.50": None}


def test_the_raw_weights_are_timed_at_the_validation_of_their_step():
    entry = {"curve": [{"step": 100, "wall_s": 10.0, "val_s": 2.0, "AP": 0.52}, {"step": 200, "wall_s": 25.0, "val_s": 3.0,
                                                                              "AP": 0.6}],
             "raw_vs_average": [{"step": 100, "raw_AP": 0.45, "average_AP": 0.52}, {"step": 150, "raw_AP": 0.5, "average_AP": 0.55},
                                {"step": 200, "raw_AP": 0.56, "average_AP": 0.6}]}
    rows = raw_weights_rows(entry)
    assert [(r["step"], r["wall_s"], r["AP"]) for r in rows] == [(100, 10.0, 0.45), (150, None, 0.5), (200, 25.0, 0.56)]
    raw = summarize(rows, thresholds=(0.5, 0.55))
    # the raw weights reach 0.50 at step 150, where no validation ran (no time), and 0.55 at step 200
    assert raw["steps_to_ap"] == {"0.50": 150, "0.55": 200} and raw["seconds_to_ap"] == {"0.50": None, "0.55": 25.0}
    assert raw["final_ap"] == 0.56 and raw["validation_s"] == 5.0


@pytest.mark.slow
def test_a_few_steps_write_every_key(tmp_path):
    out = tmp_path / "tta.json"
    proc = subprocess.run([sys.executable, "scripts/time_to_ap.py", "--out", str(out), "--runs", str(tmp_path / "runs"),
                           "--data-dir", str(tmp_path), "--num-images", "8", "--variant", "default=",
                           "--variant", "ema=--model.ema_decay 0.9 --model.ema_tau 2", "--compare-raw",
                           "--extra", TINY], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result) == {"time_to_ap", "meta"} and result["meta"]["machine"]["cpu_count"]
    runs = result["time_to_ap"]
    assert [(r["dataset"], r["variant"], r["seed"]) for r in runs] == [("synthetic", "default", 0), ("synthetic", "ema", 0)]
    for run in runs:
        assert set(run["seconds_to_ap"]) == set(run["steps_to_ap"]) == {"0.50", "0.55"}
        assert [row["step"] for row in run["curve"]] == [2, 4]  # every validation, not the sanity check
        assert all(0.0 <= row["AP"] <= 1.0 and row["wall_s"] > row["val_s"] > 0 for row in run["curve"])
        assert run["final_ap"] == run["curve"][-1]["AP"]
    assert runs[0]["raw_vs_average"] == []  # no average without EMA
    assert [row["step"] for row in runs[1]["raw_vs_average"]] == [2, 4]
    assert "| synthetic | ema | 0 |" in proc.stdout and "| synthetic | ema (raw weights) | 0 |" in proc.stdout
    assert [row["step"] for row in runs[1]["raw_weights"]["curve"]] == [2, 4]
