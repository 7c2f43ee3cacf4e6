"""The `detector` command: its help, each subcommand's help, and no third-party noise."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from detector.commands import main
from detector.quiet import LIGHTNING_INFO_LOGGER, silence_third_party_noise

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ["train", "evaluate", "predict", "export", "convert", "check-data", "ablate"]
NOISE = ("args parameter is intended", "💡 Tip", "LeafSpec")


def run_module(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "detector", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout)


def test_detector_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.split("commands:")[1].splitlines() if line.startswith("  ")]
    assert listed == SUBCOMMANDS


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: detector {name} ")


def test_unknown_subcommand_is_one_line(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown command 'trian'") and "train" in err[0]


def test_python_m_detector_train_help_prints_no_noise():
    result = run_module("train", "fit", "--config", "configs/synthetic.yaml", "--help")
    assert result.returncode == 0, result.stderr
    assert "--trainer.max_steps" in result.stdout
    assert not any(noise in result.stdout + result.stderr for noise in NOISE)


def test_silencing_drops_only_the_named_messages():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_third_party_noise()
        warnings.warn("LightningCLI's args parameter is intended to run from within Python like ...", UserWarning)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning)
        warnings.warn("The number of training batches (1) is smaller than the logging interval", UserWarning)
    assert [str(w.message) for w in caught] == ["The number of training batches (1) is smaller than the logging interval"]

    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger(LIGHTNING_INFO_LOGGER)
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        rank_zero_info("GPU available: False, used: False")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert [r.getMessage() for r in records] == ["GPU available: False, used: False"]


@pytest.mark.slow
def test_a_short_training_run_prints_no_noise(tiny_synthetic, tmp_path):
    run = tmp_path / "run"
    result = run_module(
        "train", "fit", "--config", "configs/synthetic.yaml", "--data.root", str(tiny_synthetic),
        "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "1",
        "--data.batch_size", "1", "--data.num_workers", "0", "--trainer.default_root_dir", str(run),
        "--checkpoint.dirpath", str(run / "checkpoints"), "--trainer.logger.init_args.save_dir", str(run),
        "--trainer.enable_progress_bar", "false", timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "`Trainer.fit` stopped" in output  # Lightning's own messages that matter stay
    assert not any(noise in output for noise in NOISE), output
