"""Files that are not detector checkpoints: one line saying what was found, never torch's advice."""

from __future__ import annotations

import re

import lightning as L
import pytest
import torch
import torchvision
from lightning.pytorch.demos.boring_classes import BoringModel

import detector
from detector.checkpoint import CheckpointError, read_checkpoint
from detector.training.reliability import check_training_checkpoint
from tests.data.fixtures import load_script
from tests.reliability.helpers import Payload


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A detector checkpoint (save_detector: config and weights, no training state)."""
    model = detector.build_retinanet(num_classes=3, backbone="resnet18", fpn_channels=16, head_convs=1)
    return detector.save_detector(model, tmp_path_factory.mktemp("weights") / "model.ckpt")


@pytest.fixture(scope="module")
def lightning_other(tmp_path_factory):
    """A real Lightning checkpoint of another model (Lightning's BoringModel), written by a Trainer."""
    folder = tmp_path_factory.mktemp("boring")
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=folder, accelerator="cpu")
    trainer.fit(BoringModel())
    trainer.save_checkpoint(folder / "boring.ckpt")
    return folder / "boring.ckpt"


def _torchvision_head_state():
    """The head of torchvision's own RetinaNet (its key names), small enough to save quickly."""
    model = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None,
                                                                num_classes=3)
    return {k: v for k, v in model.state_dict().items() if k.startswith("head.")}


def _write(tmp_path, kind: str, weights, lightning_other):
    path = tmp_path / f"{kind}.ckpt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated zip":
        data = weights.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "html":
        path.write_text("<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n")
    elif kind == "text":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\n")
    elif kind == "random bytes":
        path.write_bytes(bytes(range(7, 256)) * 4)
    elif kind == "code":
        torch.save({"detector_config": {}, "state_dict": {}, "x": Payload(tmp_path / "pwned")}, path)
    elif kind == "torchvision":
        torch.save(_torchvision_head_state(), path)
    elif kind == "torchvision reference-script":
        torch.save({"model": _torchvision_head_state(), "epoch": 25}, path)
    elif kind == "lightning other":
        path.write_bytes(lightning_other.read_bytes())
    elif kind == "bare state dict":
        torch.save(torch.nn.Linear(2, 3).state_dict(), path)
    elif kind == "list":
        torch.save([torch.zeros(2)], path)
    return path


KINDS = {
    "empty": r"the file is empty \(0 bytes\)",
    "truncated zip": r"a truncated or damaged zip archive",
    "html": r"an HTML page",
    "text": r"a text file \(starting 'version https://git-lfs",
    "random bytes": r"an unknown format \(first bytes 07 08 09",
    "code": r"it holds Python objects \(posix\.mkdir\) that loading would have to run: refused",
    "torchvision": r"a torchvision RetinaNet state dict: convert it first with scripts/import_torchvision\.py",
    "torchvision reference-script": r"a torchvision RetinaNet state dict: convert it first",
    "lightning other": r"a Lightning checkpoint of another model \(no 'detector_config'; weights such as 'layer",
    "bare state dict": r"a bare state dict of 2 tensors without 'detector_config' \('weight', 'bias'\)",
    "list": r"a saved list, not a dict",
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_of_not_a_checkpoint_is_one_line_saying_what_it_is(kind, tmp_path, weights, lightning_other):
    path = _write(tmp_path, kind, weights, lightning_other)
    for load in (detector.load_detector, read_checkpoint, check_training_checkpoint):
        with pytest.raises(CheckpointError) as info:
            load(path)
        message = str(info.value)
        assert message.startswith(f"{path}: not a detector checkpoint: "), message
        assert len(message.splitlines()) == 1
        assert "weights_only" not in message and "trusted source" not in message  # never torch's advice
        assert re.search(KINDS[kind], message), message
    assert not (tmp_path / "pwned").exists()


def test_weights_without_training_state_are_not_resumable(weights):
    assert read_checkpoint(weights)["detector_config"]["num_classes"] == 3
    with pytest.raises(CheckpointError, match=r"not a training checkpoint: a detector's weights without training"):
        check_training_checkpoint(weights)


@pytest.mark.parametrize("kind", ["html", "torchvision"])
def test_entry_points_print_the_same_line(kind, tmp_path, weights, lightning_other, capsys, tiny_synthetic):
    path = _write(tmp_path, kind, weights, lightning_other)
    assert load_script("evaluate").main(["--checkpoint", str(path), "--config", "configs/synthetic.yaml",
                                         "--data-root", str(tiny_synthetic)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {path}: not a detector checkpoint: " + err[0].split(": not a detector checkpoint: ")[1]]
    with pytest.raises(SystemExit) as exit_info:
        load_script("predict").main(["--checkpoint", str(path), "--input", str(tiny_synthetic / "images/val"),
                                     "--out", str(tmp_path / "pred")])
    assert exit_info.value.code == 2 and capsys.readouterr().err.strip().splitlines() == err


def test_import_torchvision_names_a_broken_source_once(tmp_path, capsys):
    path = tmp_path / "r50.pth"
    path.write_text("<html><body>Access denied</body></html>")
    assert load_script("import_torchvision").main(["--src", str(path), "--out", str(tmp_path / "m.ckpt")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {path}: not a torchvision state dict: an HTML page " \
                                              "(a download that saved the server's page instead of the file?)"
