from pathlib import Path

import pytest
import yaml

from detector.study.plan import PRESET_DIR
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
