"""format_metrics_table and save_metrics."""

from __future__ import annotations

import json

import pytest

from detector.evaluation import COCO_METRIC_NAMES, format_metrics_table, save_metrics

METRICS = {**{name: 0.5 for name in COCO_METRIC_NAMES}, "APs": -1.0, "AP": 0.41234,
           "per_class": {"cat": 0.25, "dog|wolf": -1.0}}


def test_table():
    lines = format_metrics_table(METRICS).splitlines()
    assert lines[:3] == ["| Metric | IoU | Area | MaxDets | Value |", "|---|---|---|---|---:|",
                         "| AP | 0.50:0.95 | all | 100 | 0.412 |"]
    assert "| APs | 0.50:0.95 | small | 100 | n/a |" in lines
    assert "| AR1 | 0.50:0.95 | all | 1 | 0.500 |" in lines
    assert len([line for line in lines if line.startswith("| A")]) == 12
    assert lines[-3:] == ["|---|---:|", "| cat | 0.250 |", "| dog\\|wolf | n/a |"]


def test_table_class_order_and_no_per_class():
    lines = format_metrics_table(METRICS, class_names=["dog|wolf", "cat", "eel"]).splitlines()
    assert lines[-3:] == ["| dog\\|wolf | n/a |", "| cat | 0.250 |", "| eel | n/a |"]
    plain = {k: v for k, v in METRICS.items() if k != "per_class"}
    assert "Class" not in format_metrics_table(plain)


def test_save_metrics_strict_json(tmp_path):
    path = save_metrics(METRICS, tmp_path / "a" / "m.json")
    assert json.loads(path.read_text()) == METRICS
    with pytest.raises(ValueError):
        save_metrics({"AP": float("nan")}, tmp_path / "bad.json")
