"""SIGTERM (preemption, docker stop) and SIGUSR1 (SLURM's warning before the time limit) during training:
a resumable last.ckpt at the end of the batch in progress, exit status 128 + signal, and a resume
from it that ends bit-identical to an uninterrupted run (as after SIGKILL, test_kill_resume.py)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import torch

from detector.cli import run_cli

from .helpers import REPO, RecordSteps, Throttle, callback_arg, fit_args, load, script_env, wait_for_checkpoints
from .test_kill_resume import COMMON, STEPS, _steps


@pytest.fixture(scope="module")
def reference(tiny_synthetic, tmp_path_factory):
    """The uninterrupted 12-step run: (its last.ckpt, its per-step records)."""
    full = tmp_path_factory.mktemp("full")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (script_env): the same order of float sums
    try:
        assert run_cli(fit_args(tiny_synthetic, full, *COMMON, callback_arg(RecordSteps, path=str(full / "steps.jsonl")))) == 0
    finally:
        torch.set_num_threads(before)
    return load(full / "ckpt" / "last.ckpt"), _steps(full / "steps.jsonl")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_a_signal_mid_epoch_saves_last_ckpt_exits_nonzero_and_resumes_exactly(tiny_synthetic, tmp_path, reference,
                                                                               signum):
    run, last = tmp_path / "run", tmp_path / "run" / "ckpt" / "last.ckpt"
    record = callback_arg(RecordSteps, path=str(run / "steps.jsonl"))
    proc = subprocess.Popen([sys.executable, "scripts/train.py", *fit_args(tiny_synthetic, run, *COMMON, record,
                                                                           callback_arg(Throttle, seconds=1.0))],
                            cwd=REPO, env=script_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_checkpoints(proc, last, count=2)  # the periodic checkpoint of step 6 is on disk
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, err[-3000:]
    at_stop = load(last)
    step = at_stop["global_step"]
    assert 6 <= step < STEPS, step  # the step in progress when the signal came
    assert f"error: training stopped by {signum.name} after step {step}; resume with --ckpt_path {last}" in \
        err.splitlines()
    assert "Traceback" not in err
    loader_state = at_stop["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert loader_state["batches"] == step % 4 and loader_state["epoch"] == step // 4

    resume = fit_args(tiny_synthetic, run, *COMMON, "--ckpt_path", str(last), record)
    done = subprocess.run([sys.executable, "scripts/train.py", *resume], cwd=REPO, env=script_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    ref, (ref_steps, ref_val) = reference
    res = load(last)
    res_steps, res_val = _steps(run / "steps.jsonl")
    assert res["global_step"] == STEPS and sorted(res_steps) == list(range(1, STEPS + 1))
    for s in range(1, STEPS + 1):
        assert res_steps[s] == ref_steps[s], s
    for k in ref["state_dict"]:
        assert torch.equal(ref["state_dict"][k], res["state_dict"][k]), k
    assert res_val == ref_val
