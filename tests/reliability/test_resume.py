"""Resuming with --ckpt_path: settings given are applied where safe, refused in one line where not."""

from __future__ import annotations

import json
import shutil

import pytest

from detector.cli import run_cli

from .helpers import fit_args, load

SHORT = ["--trainer.limit_val_batches", 0, "--checkpoint.monitor", "null", "--checkpoint.save_top_k", 0]


@pytest.fixture(scope="module")
def trained(tiny_synthetic, tmp_path_factory):
    """last.ckpt of a 2-step run (AdamW, lr 0.002 at batch 16, weight decay 0.05, batch 4, warmup 100 steps)."""
    run = tmp_path_factory.mktemp("base")
    assert run_cli(fit_args(tiny_synthetic, run, "--trainer.max_steps", 2, "--model.lr", "0.002", *SHORT)) == 0
    return run / "ckpt" / "last.ckpt"


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]


def test_a_changed_learning_rate_schedule_and_max_steps_are_applied(tiny_synthetic, trained, tmp_path, capsys):
    before = load(trained)["optimizer_states"][0]["param_groups"][0]["lr"]
    assert run_cli(fit_args(tiny_synthetic, tmp_path, "--trainer.max_steps", 4, *SHORT, "--ckpt_path", str(trained),
                            "--model.lr", "0.5", "--model.warmup_steps", "1", "--model.weight_decay", "0.02")) == 0
    err = capsys.readouterr().err
    assert "with 3 changed settings: model.lr 0.002 -> 0.5, model.weight_decay 0.05 -> 0.02, " \
           "model.warmup_steps 100 -> 1" in err
    state = load(tmp_path / "ckpt" / "last.ckpt")
    assert state["global_step"] == 4
    groups = state["optimizer_states"][0]["param_groups"]
    # by hand: lr 0.5 x batch 4 / reference batch 16, past the 1-step warmup, before the milestones
    assert groups[0]["lr"] == groups[1]["lr"] == pytest.approx(0.5 * 4 / 16, rel=1e-12)
    assert before == pytest.approx(0.002 * 4 / 16 * (0.001 * (1 - 2 / 100) + 2 / 100), rel=1e-12)  # step 2 of 100
    assert groups[0]["weight_decay"] == 0.02 and groups[1]["weight_decay"] == 0.0


@pytest.mark.parametrize("flag,value,old", [("--model.detector.backbone", "resnet34", "'resnet18'"),
                                             ("--model.detector.fpn_channels", "32", "16"),
                                             ("--model.detector.num_classes", "7", "5"),
                                             ("--model.optimizer", "sgd", "'adamw'")])
def test_a_change_that_cannot_resume_is_refused_naming_the_key_and_both_values(tiny_synthetic, trained, tmp_path,
                                                                                capsys, flag, value, old):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(fit_args(tiny_synthetic, tmp_path, "--trainer.max_steps", 4, *SHORT, "--ckpt_path", str(trained),
                         flag, value))
    assert exit_info.value.code == 2
    new = f"'{value}'" if not value.isdigit() else value
    assert _error_lines(capsys) == [f"error: {trained}: cannot resume with {flag[2:]} = {new}: the checkpoint was "
                                    f"trained with {old} (its weights or optimizer state would not fit)"]
    assert not (tmp_path / "ckpt" / "last.ckpt").exists()


def test_resuming_on_a_dataset_with_other_classes_is_one_line(tiny_synthetic, trained, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(tiny_synthetic, other)
    for split in ("train", "val"):
        data = json.loads((other / f"{split}.json").read_text())
        data["categories"][1]["name"] = "oblong"  # same count, another class set
        (other / f"{split}.json").write_text(json.dumps(data))
    with pytest.raises(SystemExit) as exit_info:
        run_cli(fit_args(other, tmp_path / "run", "--trainer.max_steps", 4, *SHORT, "--ckpt_path", str(trained)))
    assert exit_info.value.code == 2
    assert _error_lines(capsys) == [
        f"error: {trained}: trained on 5 classes [circle, square, triangle, cross, ring], the data has 5 classes "
        "[circle, oblong, triangle, cross, ring]: a run resumes on the same classes only"]


@pytest.mark.parametrize("flag,value,message", [
    ("--data.batch_size", "0", "--data.batch_size 0: must be an integer >= 1"),
    ("--data.batch_size", "-1", "--data.batch_size -1: must be an integer >= 1"),
    ("--model.lr", "-0.5", "--model.lr -0.5: must be a number > 0"),
    ("--model.detector.score_thresh", "2", "--model.detector.score_thresh 2.0: must be a number from 0 to 1"),
    ("--data.num_workers", "-2", "--data.num_workers -2: must be an integer >= 0"),
])
def test_training_numbers_are_range_checked_in_one_line(tiny_synthetic, tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(fit_args(tiny_synthetic, tmp_path, "--trainer.max_steps", 1, *SHORT, flag, value))
    assert exit_info.value.code == 2
    assert _error_lines(capsys) == [f"error: {message}"]


def test_save_top_k_without_a_monitor_is_one_line(tiny_synthetic, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(fit_args(tiny_synthetic, tmp_path, "--trainer.max_steps", 1, *SHORT, "--checkpoint.save_top_k", "2"))
    assert exit_info.value.code == 2
    assert _error_lines(capsys) == ["error: --checkpoint.save_top_k 2 needs --checkpoint.monitor (the metric that "
                                    "ranks checkpoints, e.g. val/AP); without one, use 0, 1 or -1"]
