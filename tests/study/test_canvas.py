"""The canvas lab (configs/ablation/canvas.yaml) end to end at a handful of steps: two canvases, two losses."""

import csv
import json

import pytest
import yaml

from detector.study.plan import PRESET_DIR, build_lab
from detector.study.report import RUN_COLUMNS
from tests.study.conftest import PNG_MAGIC, run_ablate


@pytest.fixture
def tiny_canvas_preset(tmp_path):
    """configs/ablation/canvas.yaml shrunk: 128 px canvas 1, 8 + 4 images a level, a tiny head, fp32."""
    preset = yaml.safe_load((PRESET_DIR / "canvas.yaml").read_text())
    preset["study"]["synthetic"].update(num_train=8, num_val=4, image_size=128)
    for level in preset["study"]["levels"]:
        level["root"] = str(tmp_path / f"data_{level['name']}")
    preset["study"].update(stats_images=2)
    preset["data"].update(min_size=128, max_size=128, batch_size=2, num_workers=0)
    preset["model"]["detector"].update(fpn_channels=16, head_convs=1, min_size=128, max_size=128)
    preset["trainer"].update(enable_progress_bar=False, precision="32-true")
    path = tmp_path / "canvas.yaml"
    path.write_text(yaml.safe_dump(preset, sort_keys=False))
    return path


def test_a_canvas_level_trains_at_the_canvass_size():
    lab = build_lab("canvas", "unused")
    sizes = {lv.name: (lab.level_config(lv)["data"]["min_size"], lab.level_config(lv)["data"]["max_size"])
             for lv in lab.levels}
    assert sizes == {"canvas1": (192, 192), "canvas2": (384, 384), "canvas3": (576, 576)}
    # everything but the canvas is the medium level's: its objects, steps and the imbalance lab's recipe
    medium = build_lab("imbalance", "unused", levels="medium", optimizers="adamw")
    for level in lab.levels:
        assert {k: v for k, v in level.synthetic.items() if k != "canvas"} == medium.levels[0].synthetic
        assert level.max_steps == medium.levels[0].max_steps
    canvas1 = lab.cell_study(lab.levels[0], lab.optimizers[0])
    assert canvas1.config == medium.cell_study(medium.levels[0], medium.optimizers[0]).config


@pytest.mark.slow
def test_the_canvas_preset_writes_its_table_and_gap_figure(tiny_canvas_preset, tmp_path):
    out = tmp_path / "out"
    args = ("--preset", str(tiny_canvas_preset), "--out", str(out), "--levels", "canvas1,canvas2",
            "--variants", "ce_prior,focal_g2_a0.25", "--lrs", "0.002", "--seeds", "0",
            "--max-steps", "3", "--evals", "1")  # fmt: skip
    assert run_ablate(*args) == 0

    with open(out / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == RUN_COLUMNS
        rows = list(reader)
    assert sorted((r["level"], r["loss"]) for r in rows) == [
        ("canvas1", "ce_prior"), ("canvas1", "focal_g2_a0.25"), ("canvas2", "ce_prior"), ("canvas2", "focal_g2_a0.25")]
    levels = {lv: json.loads((out / "levels" / f"{lv}.json").read_text()) for lv in ("canvas1", "canvas2")}
    # the same val objects and positives, four times the canvas: about four times the negatives per positive
    assert levels["canvas1"]["boxes_per_image"] == levels["canvas2"]["boxes_per_image"]
    assert levels["canvas2"]["positives_per_image"] == pytest.approx(levels["canvas1"]["positives_per_image"], rel=0.1)
    ratio = levels["canvas2"]["negatives_per_positive"] / levels["canvas1"]["negatives_per_positive"]
    assert 3.0 < ratio < 5.0, ratio
    for r in rows:
        assert float(r["ratio_anchor"]) == pytest.approx(levels[r["level"]]["negatives_per_positive"], rel=1e-5)
    config = yaml.safe_load((out / "canvas2_adamw" / "runs" / "ce_prior+lr0.002" / "config.yaml").read_text())
    assert (config["data"]["min_size"], config["data"]["max_size"]) == (256, 256)
    summary = (out / "summary.md").read_text()
    assert "| canvas2 | adamw | focal_g2_a0.25 | 0.002 |" in summary
    assert (out / "gap_vs_imbalance.png").read_bytes()[:8] == PNG_MAGIC
