"""Every shipped config parses with the training CLI (keys and types checked by jsonargparse)."""

from pathlib import Path

import pytest
import yaml

from detector.cli import run_cli

CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_configs_exist():
    assert {p.name for p in CONFIGS} >= {"synthetic.yaml", "voc_subset.yaml", "voc0712.yaml", "coco_r50_1x.yaml"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_parses(config, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli(["fit", "--config", str(config), "--print_config"])
    assert info.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["model"]["detector"]["cls_loss"] == "focal"
    assert resolved["checkpoint"]["monitor"] == "val/AP"


def test_own_coco_data_is_an_override(capsys, tmp_path):
    with pytest.raises(SystemExit):
        run_cli(["fit", "--config", "configs/synthetic.yaml", "--data.dataset", "coco", "--data.root", str(tmp_path),
                 "--data.train_ann", "train.json", "--data.val_ann", "val.json", "--print_config"])
    data = yaml.safe_load(capsys.readouterr().out)["data"]
    assert data["dataset"] == "coco" and data["train_ann"] == "train.json"
