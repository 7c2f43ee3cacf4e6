"""scripts/evaluate.py: the table and the JSON on success, one `error:` line and status 2 on bad input."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from detector.evaluation import COCO_METRIC_NAMES

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "evaluate.py"

# Two large GT boxes; detections TP (0.9), FP (0.85), TP (0.8) with exact boxes:
# AP = (51 * 1 + 50 * 2/3) / 101 = 253/303 at every IoU threshold (see test_coco_eval.py).
GT = {
    "images": [{"id": 1, "width": 640, "height": 480, "file_name": "1.jpg"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 100, 100], "area": 10000.0, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [200, 0, 100, 100], "area": 10000.0, "iscrowd": 0},
    ],
    "categories": [{"id": 3, "name": "box"}],
}
DT = [
    {"image_id": 1, "category_id": 3, "bbox": [0, 0, 100, 100], "score": 0.9},
    {"image_id": 1, "category_id": 3, "bbox": [400, 300, 100, 100], "score": 0.85},
    {"image_id": 1, "category_id": 3, "bbox": [200, 0, 100, 100], "score": 0.8},
]


def run_script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def files(tmp_path):
    gt, dt = tmp_path / "gt.json", tmp_path / "dt.json"
    gt.write_text(json.dumps(GT))
    dt.write_text(json.dumps(DT))
    return gt, dt


@pytest.fixture
def script_main():
    spec = importlib.util.spec_from_file_location("evaluate_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_results_file_mode(tmp_path, files):
    gt, dt = files
    out = tmp_path / "sub" / "metrics.json"
    proc = run_script("--gt", gt, "--results", dt, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "| AP | 0.50:0.95 | all | 100 | 0.835 |" in proc.stdout
    assert "| box | 0.835 |" in proc.stdout
    metrics = json.loads(out.read_text())
    assert list(metrics) == [*COCO_METRIC_NAMES, "per_class"]
    assert metrics["AP"] == pytest.approx(253 / 303, abs=1e-12)
    assert metrics["per_class"] == {"box": pytest.approx(253 / 303, abs=1e-12)}
    assert metrics["APs"] == -1.0


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "error: ground-truth file not found: "),
        ("nan", "error: results entry 1: non-finite bbox"),
    ],
)
def test_input_errors_print_one_line_and_exit_2(tmp_path, files, case, message):
    gt, dt = files
    if case == "missing":
        gt = tmp_path / "does_not_exist.json"
    else:
        dt.write_text(json.dumps(DT).replace("[400, 300, 100, 100]", "[400, NaN, 100, 100]"))
    proc = run_script("--gt", gt, "--results", dt, "--out", tmp_path / "m.json")
    assert proc.returncode == 2
    assert proc.stderr.startswith(message), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "m.json").exists()


def test_malformed_json_in_process(tmp_path, files, script_main, capsys):
    gt, dt = files
    dt.write_text('[{"image_id": 1,')
    assert script_main(["--gt", str(gt), "--results", str(dt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: results file {dt} is not valid JSON: ") and err.count("\n") == 1
    gt.write_text('{"images": []}')
    assert script_main(["--gt", str(gt), "--results", str(dt)]) == 2
    assert capsys.readouterr().err == f"error: ground-truth file {gt}: missing or non-list 'annotations'\n"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda dt: dt[0].update(image_id=7), "error: results entry 0: unknown image_id 7"),
        (lambda dt: dt[2].update(category_id=4), "error: results entry 2: unknown category_id 4"),
        (lambda dt: dt[1]["bbox"].__setitem__(2, 0), "error: results entry 1: bbox width and height must be > 0"),
        (lambda dt: dt.append("x"), "error: results entry 3: expected an object, got a string"),
    ],
)
def test_bad_results_in_process(tmp_path, files, script_main, capsys, mutate, message):
    gt, dt = files
    entries = json.loads(json.dumps(DT))
    mutate(entries)
    dt.write_text(json.dumps(entries))
    assert script_main(["--gt", str(gt), "--results", str(dt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_checkpoint_mode_input_errors_are_one_line(script_main, capsys, tmp_path):
    assert script_main(["--checkpoint", "model.ckpt"]) == 2
    assert "error: --checkpoint needs --config" in capsys.readouterr().err
    assert script_main(["--checkpoint", str(tmp_path / "missing.ckpt"), "--config", "configs/synthetic.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no such checkpoint" in err and len(err.strip().splitlines()) == 1


def test_usage_errors(script_main, files):
    gt, dt = files
    with pytest.raises(SystemExit) as info:
        script_main(["--results", str(dt)])  # no --gt
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        script_main(["--results", str(dt), "--checkpoint", "x.ckpt"])  # mutually exclusive
    assert info.value.code == 2
