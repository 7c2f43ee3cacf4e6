"""The lr schedule's decay shapes (detector.training.module.lr_factor) by hand, and a cosine run resumed
mid-run against an uninterrupted one."""

from __future__ import annotations

import json
import math

import lightning as L
import pytest
import torch

from detector.cli import run_cli
from detector.training.module import lr_factor
from tests.reliability.helpers import callback_arg, fit_args, load

WARM = dict(warmup_steps=10, warmup_factor=0.001)


def test_cosine_factor_at_a_few_steps_by_hand():
    cosine = dict(schedule="cosine", total_steps=110, final_factor=0.01, **WARM)  # 100 steps after the warm-up
    assert lr_factor(10, **cosine) == 1.0  # t = 0
    # t = 0.25: cos(pi / 4) = sqrt(2) / 2
    assert lr_factor(35, **cosine) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.sqrt(2) / 2), rel=1e-12)
    assert lr_factor(60, **cosine) == pytest.approx(0.01 + 0.99 * 0.5, rel=1e-12)  # t = 0.5
    assert lr_factor(95, **cosine) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.85)), rel=1e-12)
    assert lr_factor(110, **cosine) == pytest.approx(0.01, rel=1e-12)  # the last step: the final factor
    assert lr_factor(500, **cosine) == pytest.approx(0.01, rel=1e-12)  # t clipped to 1 past the end
    assert lr_factor(60, **{**cosine, "final_factor": 0.0}) == pytest.approx(0.5, rel=1e-12)
    # milestones and lr_decay do not apply under cosine
    assert lr_factor(60, milestones=(20, 40), lr_decay=0.1, **cosine) == lr_factor(60, **cosine)


def test_the_cosine_warm_up_is_the_step_schedule_s():
    for step in range(10):
        by_hand = 0.001 * (1 - step / 10) + step / 10
        cosine = lr_factor(step, "cosine", total_steps=110, final_factor=0.01, **WARM)
        assert cosine == lr_factor(step, "step", milestones=(60, 80), **WARM)
        assert cosine == pytest.approx(by_hand, rel=1e-12)


def test_the_step_schedule_by_hand():
    paper = dict(warmup_steps=500, warmup_factor=0.001, milestones=(60000, 80000), lr_decay=0.1)
    for step, by_hand in [(0, 0.001), (250, 0.001 * 0.5 + 0.5), (499, 0.001 / 500 + 499 / 500), (500, 1.0),
                          (59999, 1.0), (60000, 0.1), (79999, 0.1), (80000, 0.01), (90000, 0.01)]:
        assert lr_factor(step, **paper) == pytest.approx(by_hand, rel=1e-12), step
        assert lr_factor(step, "step", **paper) == lr_factor(step, **paper)  # "step" is the default


class RecordLr(L.Callback):
    """Appends {"step", "lr"} (the first group's lr the coming optimizer step uses) before each batch."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": trainer.global_step, "lr": trainer.optimizers[0].param_groups[0]["lr"]}) + "\n")


# configs/synthetic.yaml's milestones stay in the config: cosine ignores them without an error
RUN = ["--trainer.max_steps", 5, "--trainer.limit_val_batches", 0, "--checkpoint.every_n_train_steps", 1,
          "--checkpoint.monitor", "null", "--checkpoint.save_top_k", -1, "--checkpoint.filename", "{step}",
          "--checkpoint.auto_insert_metric_name", "false", "--model.warmup_steps", 1, "--model.lr", 0.002]
COSINE = [*RUN, "--model.lr_schedule", "cosine", "--model.lr_final_factor", 0.1]


def _lrs(path) -> dict[int, float]:
    return {row["step"]: row["lr"] for row in map(json.loads, open(path))}


def test_a_cosine_run_resumed_mid_run_has_the_uninterrupted_lr_and_weights_and_an_old_checkpoint_steps(tiny_synthetic, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    full.mkdir(), resumed.mkdir()
    assert run_cli(fit_args(tiny_synthetic, full, *COSINE, callback_arg(RecordLr, path=str(full / "lr.jsonl")))) == 0
    assert run_cli(fit_args(tiny_synthetic, resumed, *COSINE, callback_arg(RecordLr, path=str(resumed / "lr.jsonl")),
                            "--ckpt_path", full / "ckpt" / "2.ckpt")) == 0

    ref, res = _lrs(full / "lr.jsonl"), _lrs(resumed / "lr.jsonl")
    assert sorted(ref) == [0, 1, 2, 3, 4] and sorted(res) == [2, 3, 4]  # 2: the resume step
    base = 0.002 * 4 / 16  # RUN's lr at configs/synthetic.yaml's reference batch 16, TINY's batch 4
    for step in (2, 3, 4):
        assert res[step] == ref[step], step
        # by hand: t = (step - 1) / (5 - 1) after the 1-step warm-up
        assert ref[step] == pytest.approx(base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - 1) / 4))),
                                          rel=1e-12), step
    assert ref[0] == pytest.approx(base * 0.001, rel=1e-12)  # configs/synthetic.yaml's warmup_factor
    a, b = load(full / "ckpt" / "last.ckpt"), load(resumed / "ckpt" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 5
    assert a["hyper_parameters"]["lr_schedule"] == "cosine"
    for name in a["state_dict"]:
        assert torch.equal(a["state_dict"][name], b["state_dict"][name]), name

    # a checkpoint written before the schedule keys existed resumes on the step schedule
    old = load(full / "ckpt" / "2.ckpt")
    for key in ("lr_schedule", "lr_final_factor"):
        del old["hyper_parameters"][key]
    torch.save(old, tmp_path / "old.ckpt")
    before = tmp_path / "before"
    before.mkdir()
    assert run_cli(fit_args(tiny_synthetic, before, *RUN, callback_arg(RecordLr, path=str(before / "lr.jsonl")),
                            "--ckpt_path", tmp_path / "old.ckpt")) == 0
    assert _lrs(before / "lr.jsonl") == pytest.approx({2: base, 3: base, 4: base}, rel=1e-12)  # past the warm-up, before the milestones


@pytest.mark.parametrize("flag,value,message", [
    ("--model.lr_schedule", "linear", "--model.lr_schedule 'linear': must be one of step, cosine"),
    ("--model.lr_final_factor", "1.5", "--model.lr_final_factor 1.5: must be a number from 0 to 1"),
    ("--model.lr_final_factor", "-0.1", "--model.lr_final_factor -0.1: must be a number from 0 to 1"),
])
def test_bad_schedule_settings_are_one_line_errors(tiny_synthetic, tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(fit_args(tiny_synthetic, tmp_path, "--trainer.max_steps", 1, flag, value))
    assert exit_info.value.code == 2
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")] == [f"error: {message}"]
