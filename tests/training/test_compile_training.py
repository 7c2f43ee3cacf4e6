"""`--model.compile_training`: the training step's network forward through torch.compile, the checkpoint
and everything else as an eager run's."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from detector.cli import RESUMABLE_MODEL_KEYS, run_cli
from tests.reliability.helpers import callback_arg, fit_args, load

RUN = ["--trainer.max_steps", 3, "--trainer.limit_val_batches", 0, "--checkpoint.monitor", "null",
       "--model.warmup_steps", 1]


class RecordLoss(L.Callback):
    """Appends each training step's loss, as the step returned it, to a JSON-lines file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": trainer.global_step, "loss": float(outputs["loss"])}) + "\n")


def _losses(path) -> list[float]:
    return [row["loss"] for row in map(json.loads, open(path))]


def test_compile_training_compiles_the_model_forward_once_and_leaves_the_checkpoint_as_eager(tiny_synthetic, tmp_path,
                                                                                           monkeypatch):
    compiled = []

    def recording_compile(fn, *args, **kwargs):  # records what is compiled, runs it eagerly
        compiled.append(fn)
        return fn

    eager, with_flag = tmp_path / "eager", tmp_path / "compiled"
    assert run_cli(fit_args(tiny_synthetic, eager, *RUN)) == 0
    monkeypatch.setattr(torch, "compile", recording_compile)
    assert run_cli(fit_args(tiny_synthetic, with_flag, *RUN, "--model.compile_training", "true")) == 0

    assert len(compiled) == 1 and compiled[0].__name__ == "forward"
    assert type(compiled[0].__self__).__name__ == "RetinaNet"  # the network, not the LightningModule
    a, b = load(eager / "ckpt" / "last.ckpt"), load(with_flag / "ckpt" / "last.ckpt")
    assert b["hyper_parameters"]["compile_training"] is True and a["hyper_parameters"]["compile_training"] is False
    assert list(a["state_dict"]) == list(b["state_dict"])  # no wrapper among the weights
    for name in a["state_dict"]:
        assert torch.equal(a["state_dict"][name], b["state_dict"][name]), name
    assert "compile_training" in RESUMABLE_MODEL_KEYS  # a resumed run may switch it: the weights do not change


@pytest.mark.slow
def test_a_compiled_training_step_gives_the_eager_loss(tiny_synthetic, tmp_path):
    losses = {}
    for name, extra in (("eager", []), ("compiled", ["--model.compile_training", "true"])):
        run_dir = tmp_path / name
        run_dir.mkdir()
        args = [*RUN, "--trainer.max_steps", 2, callback_arg(RecordLoss, path=str(run_dir / "loss.jsonl")), *extra]
        assert run_cli(fit_args(tiny_synthetic, run_dir, *args)) == 0
        losses[name] = _losses(run_dir / "loss.jsonl")
    assert len(losses["eager"]) == len(losses["compiled"]) == 2
    # the same weights and batch, float32: the compiled kernels only reorder the sums
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-4)
