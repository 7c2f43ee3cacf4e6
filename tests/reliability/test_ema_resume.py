"""Kill/resume with the EMA on: a run resumed mid-epoch ends with the average of an uninterrupted run.

The average, the raw weights and the update count are in every checkpoint (detector/training/ema.py);
the rest of exact resume is test_kill_resume.py's. The step-6 checkpoint of the uninterrupted run
is what a run killed after step 6 leaves (checkpoints are written whole, atomically).
"""

import pytest
import torch

import detector
from detector.cli import run_cli
from detector.training.ema import RAW_WEIGHTS_KEY

from .helpers import fit_args, load

EMA = ["--trainer.max_steps", 12, "--trainer.val_check_interval", 12, "--trainer.num_sanity_val_steps", 0,
       "--checkpoint.every_n_train_steps", 3, "--checkpoint.monitor", "null", "--checkpoint.save_top_k", -1,
       "--checkpoint.filename", "{step}", "--checkpoint.auto_insert_metric_name", "false",
       "--model.warmup_steps", 1, "--model.ema_decay", 0.9, "--model.ema_tau", 3]


@pytest.mark.slow
def test_resume_mid_epoch_gives_the_same_average_and_load_detector_reads_it(tiny_synthetic, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert run_cli(fit_args(tiny_synthetic, full, *EMA)) == 0
    at_6 = full / "ckpt" / "6.ckpt"  # 16 images / batch 4: step 6 is in the middle of the second epoch
    assert load(at_6)["averaging_state"]["n_averaged"] == 6
    assert run_cli(fit_args(tiny_synthetic, resumed, *EMA, "--ckpt_path", at_6)) == 0

    ref, res = load(full / "ckpt" / "last.ckpt"), load(resumed / "ckpt" / "last.ckpt")
    assert ref["global_step"] == res["global_step"] == 12
    for key in ("state_dict", RAW_WEIGHTS_KEY, "averaging_state"):  # the average, the raw weights, the count
        assert ref[key].keys() == res[key].keys(), key
        for name in ref[key]:
            assert torch.equal(ref[key][name], res[key][name]), (key, name)
    assert int(ref["averaging_state"]["n_averaged"]) == 12
    # the saved weights are the average, not the raw weights; load_detector (predict, evaluate, export) reads them
    raw, ema = ref[RAW_WEIGHTS_KEY], ref["state_dict"]
    assert any(not torch.equal(raw[k], ema[k]) for k in ema if ema[k].is_floating_point())
    model = detector.load_detector(full / "ckpt" / "last.ckpt")
    for name, value in model.state_dict().items():
        assert torch.equal(value, ema["model." + name]), name
