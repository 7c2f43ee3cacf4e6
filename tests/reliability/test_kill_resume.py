"""A run killed with SIGKILL mid-epoch resumes from last.ckpt and ends exactly where an uninterrupted run ends.

Why exact: the training loader (detector.training.reliability) orders each epoch by (seed + epoch),
seeds every sample's augmentation by its position, and stores how many batches of the epoch were
trained in the checkpoint; the model, optimizer, scheduler and loop counters are Lightning's. On one
CPU process with the same thread count, every number of the resumed run is then bit-identical.

Checkpoints are written atomically (temp file + fsync + os.replace): a process killed while writing
leaves the previous last.ckpt whole.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from detector.cli import run_cli
from detector.training.reliability import AtomicCheckpointIO

from .helpers import REPO, RecordSteps, Throttle, callback_arg, fit_args, load, script_env, wait_for_checkpoints

STEPS = 12  # 16 images / batch 4 = 4 batches an epoch: 3 epochs
EVERY = 3  # checkpoints after steps 3, 6, 9, 12: 3, 6 and 9 are mid-epoch
# No monitor: Lightning (2.6) defers periodic checkpoints of a monitored ModelCheckpoint until the
# monitored metric exists, i.e. until the first validation; here validation runs once, at the end.
COMMON = ["--trainer.max_steps", STEPS, "--checkpoint.every_n_train_steps", EVERY, "--checkpoint.monitor", "null",
          "--checkpoint.save_top_k", 0, "--trainer.val_check_interval", STEPS, "--trainer.num_sanity_val_steps", 0]


def _steps(path) -> tuple[dict[int, dict], dict]:
    """({step: its row}, the last validation's metrics) from a RecordSteps file."""
    rows = [json.loads(line) for line in open(path)]
    validations = [row["metrics"] for row in rows if "validation_at" in row]
    return {row["step"]: row for row in rows if "step" in row}, validations[-1]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tiny_synthetic, tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"

    # the reference: 12 steps in one go (in-process: one interpreter start less)
    assert run_cli(fit_args(tiny_synthetic, full, *COMMON, callback_arg(RecordSteps, path=str(full / "steps.jsonl")))) == 0

    # the same run, slowed down after each batch, killed once the second checkpoint (step 6) is on disk
    last = killed / "ckpt" / "last.ckpt"
    args = fit_args(tiny_synthetic, killed, *COMMON, callback_arg(RecordSteps, path=str(killed / "steps.jsonl")),
                    callback_arg(Throttle, seconds=0.5))
    proc = subprocess.Popen([sys.executable, "scripts/train.py", *args], cwd=REPO, env=script_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_checkpoints(proc, last, count=2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    at_kill = load(last)  # whole and readable with weights_only
    step = at_kill["global_step"]
    assert step in (6, 9) and step % 4 != 0, step  # mid-epoch (4 batches an epoch)
    loader_state = at_kill["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert loader_state["batches"] == step % 4 and loader_state["epoch"] == step // 4

    # resume from it, in a fresh process, to the same 12 steps
    resume = fit_args(tiny_synthetic, killed, *COMMON, "--ckpt_path", str(last),
                      callback_arg(RecordSteps, path=str(killed / "steps.jsonl")))
    done = subprocess.run([sys.executable, "scripts/train.py", *resume], cwd=REPO, env=script_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    ref, res = load(full / "ckpt" / "last.ckpt"), load(last)
    assert ref["global_step"] == res["global_step"] == STEPS
    # the same images, augmented alike, and the same losses at every step, before and after the kill
    (ref_steps, ref_val), (res_steps, res_val) = _steps(full / "steps.jsonl"), _steps(killed / "steps.jsonl")
    assert sorted(res_steps) == list(range(1, STEPS + 1))
    for s in range(1, STEPS + 1):
        assert res_steps[s] == ref_steps[s], s
    # bit-identical weights, optimizer state and validation AP
    assert ref["state_dict"].keys() == res["state_dict"].keys()
    diffs = {k: (ref["state_dict"][k].double() - res["state_dict"][k].double()).abs().max().item()
             for k in ref["state_dict"]}
    assert max(diffs.values()) == 0.0, sorted(diffs.items(), key=lambda kv: -kv[1])[:3]
    ref_opt, res_opt = ref["optimizer_states"][0]["state"], res["optimizer_states"][0]["state"]
    assert ref_opt.keys() == res_opt.keys() and ref_opt
    for key in ref_opt:  # whatever the optimiser keeps (SGD momentum, AdamW moments and step)
        assert ref_opt[key].keys() == res_opt[key].keys()
        for name in ref_opt[key]:
            assert torch.equal(ref_opt[key][name], res_opt[key][name]), (key, name)
    assert "val/AP" in ref_val and res_val == ref_val


BOMB = textwrap.dedent("""
    import os, signal, sys, torch
    from detector.training.reliability import AtomicCheckpointIO

    class Bomb:  # pickling this kills the process: a SIGKILL in the middle of a checkpoint write
        def __reduce__(self):
            os.kill(os.getpid(), signal.SIGKILL)

    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.arange(10.0)}, "global_step": 1}, sys.argv[1])
    io.save_checkpoint({"state_dict": {"w": torch.zeros(10**6)}, "global_step": 2, "bomb": Bomb()}, sys.argv[1])
""")


def test_kill_while_writing_keeps_the_previous_checkpoint(tmp_path):
    last = tmp_path / "last.ckpt"
    proc = subprocess.run([sys.executable, "-c", BOMB, str(last)], cwd=REPO, env=script_env(), timeout=120)
    assert proc.returncode == -signal.SIGKILL
    state = load(last)  # the first write, whole
    assert state["global_step"] == 1 and torch.equal(state["state_dict"]["w"], torch.arange(10.0))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last.ckpt"]
    assert leftovers and all(n.startswith(".last.ckpt.") and n.endswith(".tmp") for n in leftovers)
    # the next save (another process) removes the dead writer's temp file
    AtomicCheckpointIO().save_checkpoint({"state_dict": {}, "global_step": 3}, last)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"] and load(last)["global_step"] == 3


def test_the_cli_writes_checkpoints_through_the_atomic_plugin(tiny_synthetic, tmp_path, monkeypatch):
    written = []
    original = AtomicCheckpointIO.save_checkpoint

    def spy(self, checkpoint, path, storage_options=None):
        written.append(os.path.basename(path))
        return original(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", spy)
    assert run_cli(fit_args(tiny_synthetic, tmp_path, "--trainer.max_steps", 2, "--trainer.limit_val_batches", 0,
                            "--checkpoint.every_n_train_steps", 1, "--checkpoint.monitor", "null",
                            "--checkpoint.save_top_k", 0)) == 0
    assert "last.ckpt" in written
    assert not list((tmp_path / "ckpt").glob(".*.tmp"))
