"""A study killed with SIGKILL in the middle of a variant resumes that variant from its last.ckpt
and ends with the same record (every training loss, every validation) as a study that was never
killed: the resume path of scripts/train.py, used by scripts/ablate.py."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from tests.reliability.helpers import REPO, Throttle, load, script_env, wait_for_checkpoints

from .conftest import SCRIPT, run_ablate

VARIANT = "ce_prior"


@pytest.fixture
def throttled_preset(tiny_preset, tmp_path):
    """The tiny preset, sleeping 0.4 s after each batch: time to kill the study mid-variant."""
    preset = yaml.safe_load(tiny_preset.read_text())
    preset["trainer"]["callbacks"] = [{"class_path": f"{Throttle.__module__}.{Throttle.__qualname__}",
                                       "init_args": {"seconds": 0.4}}]
    path = tmp_path / "throttled.yaml"
    path.write_text(yaml.safe_dump(preset, sort_keys=False))
    return path


@pytest.fixture
def one_thread():
    """One compute thread here, as in the subprocess (script_env): the same order of float sums."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_killed_study_resumes_its_variant_and_ends_as_if_never_killed(throttled_preset, tmp_path, one_thread,
                                                                        capsys):
    # 6 steps, validations at 2, 4, 6; 8 training images at batch 2: 4 batches an epoch
    common = ["--preset", str(throttled_preset), "--variants", VARIANT, "--max-steps", "6", "--evals", "3",
              "--no-report"]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    assert run_ablate(*common, "--out", str(ref)) == 0

    last = killed / "runs" / VARIANT / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *common, "--out", str(killed)], cwd=REPO,
                            env=script_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_checkpoints(proc, last, count=1)  # written after the validation at step 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "runs" / VARIANT / "result.json").exists()
    at_kill = load(last)["global_step"]
    assert at_kill in (2, 4), at_kill  # mid-epoch (2) or at an epoch's end (4)

    capsys.readouterr()
    assert run_ablate(*common, "--out", str(killed)) == 0
    assert f"{VARIANT}: resuming from {last}" in capsys.readouterr().out

    run_ref, run_killed = ref / "runs" / VARIANT, killed / "runs" / VARIANT
    ref_train, res_train = _csv(run_ref / "train.csv"), _csv(run_killed / "train.csv")
    assert [int(r["step"]) for r in res_train] == [1, 2, 3, 4, 5, 6]  # no step lost, none twice
    assert res_train == ref_train  # the same loss, lr and imbalance statistics at every step
    ref_val, res_val = _csv(run_ref / "val.csv"), _csv(run_killed / "val.csv")
    assert [int(r["step"]) for r in res_val] == [2, 4, 6]
    assert res_val == ref_val
    ref_result = json.loads((run_ref / "result.json").read_text())
    res_result = json.loads((run_killed / "result.json").read_text())
    for key in ("AP", "AP50", "final_loss_cls", "final_loss_box", "diverged", "steps"):
        assert res_result[key] == ref_result[key], key
    assert res_result["minutes"] > 0
    assert not last.parent.exists()  # the resume point is deleted once the variant is done
