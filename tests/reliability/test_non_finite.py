"""A non-finite loss or gradient stops training with a message naming the step and the part, and the
last good checkpoint stays; with `--model.on_non_finite skip` the batch is dropped and training goes on.

Faults are injected into real runs by callbacks (helpers.py): a head bias set to NaN (the loss part it
feeds turns NaN), a gradient set to inf after backward, or a learning rate that makes training diverge.
"""

from __future__ import annotations

import re

import pytest

import detector
from detector.cli import run_cli

from .helpers import CorruptHead, PoisonGradient, all_finite, callback_arg, fit_args, load

# checkpoints (last.ckpt only) after every 2 steps; no validation
FAST = ["--trainer.limit_val_batches", 0, "--checkpoint.monitor", "null", "--checkpoint.save_top_k", 0,
        "--checkpoint.every_n_train_steps", 2, "--trainer.num_sanity_val_steps", 0]


@pytest.mark.parametrize("part, loss, detail", [("cls", "loss_cls", "the head's logits are not finite"),
                                                ("box", "loss_box", "the head's box deltas are not finite")])
def test_stop_names_step_and_part_and_keeps_the_last_good_checkpoint(tiny_synthetic, tmp_path, capsys, part, loss,
                                                                       detail):
    args = fit_args(tiny_synthetic, tmp_path, "--trainer.max_steps", 8, *FAST, callback_arg(CorruptHead, step=5, part=part))
    assert run_cli(args) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"error: training stopped: step 5: {loss} is not finite: {detail}; the last good checkpoint is kept"

    last = tmp_path / "ckpt" / "last.ckpt"
    state = load(last)
    assert state["global_step"] == 4 and all_finite(state["state_dict"])  # written before the fault, untouched
    assert detector.load_detector(last).config.fpn_channels == 16
    if part == "cls":  # and training resumes from it
        assert run_cli(fit_args(tiny_synthetic, tmp_path, "--trainer.max_steps", 6, *FAST, "--ckpt_path", last)) == 0
        assert load(last)["global_step"] == 6


def test_skip_drops_the_bad_batch_and_goes_on(tiny_synthetic, tmp_path):
    CorruptHead.seen_skipped = -1
    args = fit_args(tiny_synthetic, tmp_path, "--trainer.max_steps", 5, *FAST, "--model.on_non_finite", "skip",
                    callback_arg(CorruptHead, step=2, part="cls", transient=True))
    assert run_cli(args) == 0
    # the skipped batch made no optimizer step: 5 steps took 6 batches
    assert CorruptHead.seen_skipped == 1 and CorruptHead.seen_step == 5
    assert all_finite(load(tmp_path / "ckpt" / "last.ckpt")["state_dict"])


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_non_finite_gradient_with_a_finite_loss(tiny_synthetic, tmp_path, capsys, policy):
    PoisonGradient.seen_skipped = -1
    args = fit_args(tiny_synthetic, tmp_path, "--trainer.max_steps", 4, *FAST, "--model.on_non_finite", policy,
                    callback_arg(PoisonGradient, step=3))
    if policy == "stop":
        assert run_cli(args) == 3
        assert "error: training stopped: step 3: the gradient is not finite" in capsys.readouterr().err
        assert load(tmp_path / "ckpt" / "last.ckpt")["global_step"] == 2
    else:
        assert run_cli(args) == 0
        assert PoisonGradient.seen_skipped == 1
        assert all_finite(load(tmp_path / "ckpt" / "last.ckpt")["state_dict"])


def test_divergence_from_a_huge_learning_rate_never_writes_a_broken_checkpoint(tiny_synthetic, tmp_path, capsys):
    args = fit_args(tiny_synthetic, tmp_path, "--trainer.max_steps", 8, *FAST, "--checkpoint.every_n_train_steps", 1,
                    "--model.lr", "1e12", "--model.warmup_steps", 0)
    assert run_cli(args) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(r"error: training stopped: step \d+: .*not finite.*; the last good checkpoint is kept", err), err
    step = int(re.search(r"step (\d+)", err).group(1))
    last = tmp_path / "ckpt" / "last.ckpt"
    if last.exists():  # every checkpoint that was written holds finite weights
        state = load(last)
        assert state["global_step"] <= step and all_finite(state["state_dict"])


def test_a_checkpoint_of_non_finite_weights_is_never_written(tiny_synthetic, tmp_path, capsys):
    # weights turn NaN right after the optimizer step of step 4, before that step's checkpoint
    args = fit_args(tiny_synthetic, tmp_path, "--trainer.max_steps", 8, *FAST,
                    callback_arg(CorruptHead, step=4, part="box", after_step=True))
    assert run_cli(args) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("error: training stopped: step 4: model.head.regression_head.bbox_reg.bias is not finite; "
                   "checkpoint not written; the last good checkpoint is kept")
    state = load(tmp_path / "ckpt" / "last.ckpt")
    assert state["global_step"] == 2 and all_finite(state["state_dict"])
