"""Lightning training end to end: fit writes checkpoints, resume continues, DDP-safe pieces."""

import torch

import detector
from detector.cli import run_cli

from .conftest import TINY


def _fit(root, run_dir, *extra):
    args = ["fit", "--config", "configs/synthetic.yaml", "--data.root", str(root),
            "--trainer.default_root_dir", str(run_dir), "--trainer.logger.init_args.save_dir", str(run_dir),
            "--checkpoint.dirpath", str(run_dir / "ckpt"), *TINY, *extra]
    assert run_cli(args) == 0


def test_fit_writes_checkpoints_and_resume_continues_the_step_count(tiny_synthetic, tmp_path):
    _fit(tiny_synthetic, tmp_path, "--trainer.max_steps", "3", "--trainer.val_check_interval", "3")
    last = tmp_path / "ckpt" / "last.ckpt"
    best = tmp_path / "ckpt" / "best.ckpt"
    assert last.is_file() and best.is_file()
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["global_step"] == 3
    assert state["class_names"] == ["circle", "square", "triangle", "cross", "ring"]
    model = detector.load_detector(best)  # a Lightning checkpoint loads without Lightning
    assert model.config.num_classes == 5 and model.config.fpn_channels == 16
    assert "val/AP" in str(state["callbacks"])  # best was chosen by validation AP

    _fit(tiny_synthetic, tmp_path, "--trainer.max_steps", "5", "--trainer.val_check_interval", "3",
         "--ckpt_path", str(last))
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 5
    # the resolved config of the run is saved with its logs
    assert list(tmp_path.rglob("config.yaml"))
