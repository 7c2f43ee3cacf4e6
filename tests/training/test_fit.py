"""Lightning training end to end: fit writes checkpoints, resume continues, DDP-safe pieces."""

import json
import os

import lightning as L
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
    # one image-size key: the data's (TINY's --data.min_size 128), not RetinaNetConfig's default 800
    assert (model.config.min_size, model.config.max_size) == (128, 128)
    assert "val/AP" in str(state["callbacks"])  # best was chosen by validation AP

    _fit(tiny_synthetic, tmp_path, "--trainer.max_steps", "5", "--trainer.val_check_interval", "3",
         "--ckpt_path", str(last))
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 5
    # the resolved config of the run is saved with its logs
    assert list(tmp_path.rglob("config.yaml"))


def test_a_checkpoint_written_before_a_setting_was_removed_still_resumes(tiny_synthetic, tmp_path):
    _fit(tiny_synthetic, tmp_path, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2")
    last = tmp_path / "ckpt" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    state["hyper_parameters"]["detector"]["box_loss_weight"] = 1.0  # a removed key at its only value
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    _fit(tiny_synthetic, tmp_path, "--trainer.max_steps", "3", "--trainer.val_check_interval", "3",
         "--ckpt_path", str(old))
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 3

    state["hyper_parameters"]["detector"]["box_loss_weight"] = 2.0  # any other value is still refused
    torch.save(state, old)
    args = ["fit", "--config", "configs/synthetic.yaml", "--data.root", str(tiny_synthetic),
            "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--checkpoint.dirpath", str(tmp_path / "ckpt"), *TINY, "--trainer.max_steps", "4", "--ckpt_path", str(old)]
    try:
        rc = run_cli(args)
    except SystemExit as err:
        rc = err.code
    assert rc != 0


class LastCheckpointSteps(L.Callback):
    """Records the global_step stored in last.ckpt each time the file changes, seen before each batch."""

    def __init__(self, last: str, out: str) -> None:
        self.last, self.out, self.seen, self._stamp = last, out, [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        try:
            stat = os.stat(self.last)
        except FileNotFoundError:
            return
        if (stat.st_ino, stat.st_mtime_ns) != self._stamp:
            self._stamp = (stat.st_ino, stat.st_mtime_ns)
            self.seen.append(torch.load(self.last, map_location="cpu", weights_only=True)["global_step"])

    def on_train_end(self, trainer, pl_module) -> None:
        with open(self.out, "w") as f:
            json.dump(self.seen, f)


def test_last_checkpoint_follows_every_validation_and_the_end(tiny_synthetic, tmp_path):
    """last.ckpt is rewritten at each validation, whether or not val/AP improved (Lightning 2.6 ties
    it to the best checkpoint), and holds the final step even when training ends between validations."""
    last, seen = tmp_path / "ckpt" / "last.ckpt", tmp_path / "seen.json"
    callback = {"class_path": f"{__name__}.LastCheckpointSteps", "init_args": {"last": str(last), "out": str(seen)}}
    _fit(tiny_synthetic, tmp_path, "--trainer.max_steps", "7", "--trainer.val_check_interval", "2",
         "--trainer.num_sanity_val_steps", "0", "--trainer.callbacks+=" + json.dumps(callback))
    assert json.loads(seen.read_text()) == [2, 4, 6]  # validations at steps 2, 4, 6
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 7


def test_imbalance_statistics_are_computed_only_on_the_steps_the_logger_writes(tiny_synthetic, tmp_path, monkeypatch):
    """They cost host synchronisations: 6 steps logged every 3rd compute them twice; on request every step."""
    from detector.model.losses import ImbalanceStats

    computed = []
    as_dict = ImbalanceStats.as_dict
    monkeypatch.setattr(ImbalanceStats, "as_dict", lambda self, prefix="": computed.append(1) or as_dict(self, prefix))
    common = ["--trainer.max_steps", "6", "--trainer.log_every_n_steps", "3", "--trainer.limit_val_batches", "0",
              "--trainer.num_sanity_val_steps", "0"]
    _fit(tiny_synthetic, tmp_path / "a", *common)
    assert len(computed) == 2
    computed.clear()
    _fit(tiny_synthetic, tmp_path / "b", *common, "--model.imbalance_every_step", "true")
    assert len(computed) == 6
