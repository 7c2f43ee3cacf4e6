"""The canvas lab (configs/ablation/canvas.yaml) end to end at a handful of steps: two canvases, two losses."""

import pytest
import yaml

from detector.study.plan import build_lab
from tests.study.conftest import PNG_MAGIC, run_tiny_lab, shrunk_lab_preset


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
def test_the_canvas_preset_writes_its_table_and_gap_figure(tmp_path):
    out = tmp_path / "out"
    rows, levels = run_tiny_lab(shrunk_lab_preset("canvas", tmp_path), out, ("canvas1", "canvas2"))
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
