import csv
import json
from pathlib import Path

import pytest
import yaml

from detector.study.plan import PRESET_DIR
from detector.study.report import RUN_COLUMNS
from tests.conftest import write_tiny_synthetic
from tests.data.fixtures import load_script


@pytest.fixture(scope="session")
def study_data(tmp_path_factory):
    """A tiny synthetic set at 128 px: 8 training and 4 validation images."""
    return write_tiny_synthetic(tmp_path_factory.mktemp("study_synthetic"), num_train=8, num_val=4)


@pytest.fixture
def tiny_preset(tmp_path, study_data):
    """configs/ablation/quick.yaml, shrunk: a tiny head, 128 px, batch 2, no worker processes."""
    preset = yaml.safe_load((PRESET_DIR / "quick.yaml").read_text())
    preset["study"].update(stats_images=2, synthetic=None)
    preset["data"].update(root=str(study_data), min_size=128, max_size=128, batch_size=2, num_workers=0)
    preset["model"]["detector"].update(fpn_channels=16, head_convs=1, min_size=128, max_size=128)
    preset["trainer"].update(enable_progress_bar=False)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(preset, sort_keys=False))
    return path


SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ablate.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_ablate(*args: str) -> int:
    """scripts/ablate.py's main() in this process, with these arguments."""
    return load_script("ablate").main(list(args))


def shrunk_lab_preset(name: str, tmp_path: Path) -> Path:
    """configs/ablation/<name>.yaml shrunk: 128 px, 8 + 4 images a level, a tiny head, fp32."""
    preset = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text())
    preset["study"]["synthetic"].update(num_train=8, num_val=4, image_size=128)
    for level in preset["study"]["levels"]:
        level["root"] = str(tmp_path / f"data_{level['name']}")
    preset["study"].update(stats_images=2, save_models=True)
    preset["data"].update(min_size=128, max_size=128, batch_size=2, num_workers=0)
    preset["model"]["detector"].update(fpn_channels=16, head_convs=1, min_size=128, max_size=128)
    preset["trainer"].update(enable_progress_bar=False, precision="32-true")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(preset, sort_keys=False))
    return path


def run_tiny_lab(preset: Path, out: Path, levels: tuple[str, str]) -> tuple[list[dict], dict[str, dict]]:
    """Two levels, CE and focal loss at lr 0.002 under AdamW, seed 0, 3 steps: (results.csv's rows,
    {level: levels/<level>.json}), after checking the rows' columns and (level, loss) pairs."""
    args = ("--preset", str(preset), "--out", str(out), "--levels", ",".join(levels),
            "--variants", "ce_prior,focal_g2_a0.25", "--lrs", "0.002", "--optimizers", "adamw", "--seeds", "0",
            "--max-steps", "3", "--evals", "1")  # fmt: skip
    assert run_ablate(*args) == 0
    with open(out / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == RUN_COLUMNS
        rows = list(reader)
    assert sorted((r["level"], r["loss"]) for r in rows) == sorted(
        (level, loss) for level in levels for loss in ("ce_prior", "focal_g2_a0.25"))
    return rows, {lv: json.loads((out / "levels" / f"{lv}.json").read_text()) for lv in levels}
