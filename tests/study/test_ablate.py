"""scripts/ablate.py end to end on a tiny synthetic set: the table, the plots, skipping finished
variants, and a diverging variant as a row of the table rather than a crash of the study."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from detector.study import StudyError, build_study, run_study
from detector.study.runner import variant_config_text, write_study_json
from detector.study.plots import PLOTS
from detector.study.report import RESULT_COLUMNS
from tests.study.conftest import PNG_MAGIC, run_ablate



def _rows(out: Path) -> dict[str, dict]:
    with open(out / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == RESULT_COLUMNS
        return {row["variant"]: row for row in reader}


def test_study_writes_table_and_plots_skips_finished_and_records_divergence(tiny_preset, tmp_path, capsys):
    out = tmp_path / "out"
    # 3 steps, 2 validations: Lightning validates at step 2, the recorder at the last step (3)
    common = ("--preset", str(tiny_preset), "--out", str(out), "--max-steps", "3", "--evals", "2")
    assert run_ablate(*common, "--variants", "ce_prior,focal_g2_a0.25", "--no-report") == 0

    rows = _rows(out)
    assert list(rows) == ["ce_prior", "focal_g2_a0.25"]
    focal, ce = rows["focal_g2_a0.25"], rows["ce_prior"]
    assert (focal["loss"], focal["gamma"], focal["alpha"], focal["prior_init"]) == ("focal", "2", "0.25", "true")
    assert (ce["loss"], ce["gamma"], ce["alpha"], ce["prior_init"]) == ("ce", "0", "", "true")
    for row in rows.values():
        assert row["diverged"] == "false" and row["diverged_step"] == ""
        assert 0.0 <= float(row["AP"]) <= 1.0 and 0.0 <= float(row["AP50"]) <= 1.0
        assert float(row["final_loss_cls"]) > 0 and float(row["final_loss_box"]) >= 0 and float(row["minutes"]) > 0
    header = (out / "results.md").read_text().splitlines()
    assert "| " + " | ".join(RESULT_COLUMNS) + " |" in header

    run = out / "runs" / "focal_g2_a0.25"
    with open(run / "val.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [2, 3]
    with open(run / "train.csv") as f:
        train = list(csv.DictReader(f))
    assert [int(r["step"]) for r in train] == [1, 2, 3]
    assert all(0.0 <= float(r["easy_neg_loss_share"]) <= float(r["neg_loss_share"]) <= 1.0 for r in train)
    stats = json.loads((run / "stats.json").read_text())
    for kind in ("positive", "negative"):
        cdf = stats["cdf"][kind]["2"]
        assert cdf[0] == 0.0 and cdf[-1] == pytest.approx(1.0)
        assert all(a <= b + 1e-9 for a, b in zip(cdf, cdf[1:]))
    assert list((out / "tb" / "focal_g2_a0.25").glob("events.out.tfevents.*"))
    assert (out / "checkpoints" / "focal_g2_a0.25" / "final.pt").is_file()
    assert "checkpoints/" in (out / ".gitignore").read_text()
    done = {v: (out / "runs" / v / "result.json").stat().st_mtime_ns for v in rows}

    # a rerun skips the finished variants; a variant forced to diverge becomes a row
    capsys.readouterr()
    assert run_ablate(*common, "--variants", "ce_prior,focal_g2_a0.25,ce_no_prior+lr1e30") == 0
    log = capsys.readouterr().out
    assert "ce_prior: finished before, skipped" in log and "focal_g2_a0.25: finished before, skipped" in log
    assert {v: (out / "runs" / v / "result.json").stat().st_mtime_ns for v in done} == done

    rows = _rows(out)
    assert list(rows) == ["ce_no_prior+lr1e30", "ce_prior", "focal_g2_a0.25"]
    bad = rows["ce_no_prior+lr1e30"]
    assert bad["diverged"] == "true" and int(bad["diverged_step"]) >= 0 and bad["AP"] == ""
    assert bad["prior_init"] == "false"
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name
        assert f"]({name})" in (out / "results.md").read_text()


def test_an_output_folder_keeps_one_set_of_settings(tiny_preset, tmp_path):
    out = tmp_path / "out"
    study, _ = build_study(tiny_preset, out, variants="ce_prior", max_steps=3)
    out.mkdir()
    write_study_json(study)
    other, variants = build_study(tiny_preset, out, variants="ce_prior", max_steps=4)
    with pytest.raises(StudyError, match="other settings.*max_steps"):
        run_study(other, variants)  # refused before anything trains
    assert not (out / "runs").exists()


def test_list_names_the_study_presets_not_the_plain_training_configs_beside_them(capsys):
    assert run_ablate("--list") == 0
    presets = capsys.readouterr().out.splitlines()[0].removeprefix("presets: ").split(", ")
    assert presets == ["canvas", "dense", "imbalance", "quick", "voc"]  # configs/ablation/gradients.yaml: not one


def test_records_name_a_preset_by_its_path_in_the_repository_not_the_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the repository: the named preset resolves to an absolute path
    study, variants = build_study("quick", tmp_path / "out", variants="ce_prior")
    assert study.preset.is_absolute()
    (tmp_path / "out").mkdir()
    write_study_json(study)
    assert json.loads((tmp_path / "out" / "study.json").read_text())["preset"] == "configs/ablation/quick.yaml"
    header = variant_config_text(study, variants[0]).splitlines()[0]
    assert header.endswith("(preset configs/ablation/quick.yaml).")
