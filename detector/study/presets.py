"""Study presets: configs/ablation/*.yaml read into a training config and the study's settings.

A preset is a training config (seed_everything, trainer, model, data, as scripts/train.py reads
them) plus a `study:` section (STUDY_DEFAULTS lists its keys; the imbalance lab's presets have
their own, detector.study.lab). Every module of the study raises StudyError, defined here.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

PRESET_DIR = Path(__file__).resolve().parents[2] / "configs" / "ablation"
TRAIN_SECTIONS = ("seed_everything", "trainer", "model", "data")

STUDY_DEFAULTS: dict[str, Any] = {
    "variants": ["ce_no_prior", "ce_prior", "focal_g2_a0.25"],
    "losses": None,  # {name: model.detector keys}: the variants' settings (detector.study.variants)
    "max_steps": 500,
    "evals": 5,
    "milestone_fractions": [0.667, 0.889],
    "stats_images": 64,
    "gammas": [0.0, 0.5, 1.0, 2.0, 5.0],
    "save_models": True,
    "synthetic": None,
    "foreground_prior": None,  # the bias init of `sampling_free` variants: measured by the imbalance lab
    "low_score_thresh": None,  # also evaluate the final model at this score threshold (e.g. 0.001)
}


class StudyError(RuntimeError):
    """A study that cannot run as asked (bad preset, mixed settings, a variant that crashed)."""


def preset_path(preset: str | os.PathLike) -> Path:
    """A preset name ("quick" -> configs/ablation/quick.yaml) or a path to a YAML file."""
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    named = PRESET_DIR / f"{preset}.yaml"
    if not named.is_file():
        known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))) or "none"
        raise StudyError(f"no preset {preset!r} (known: {known}; or give a path to a YAML file)")
    return named


def read_preset(path: Path) -> Any:
    """The parsed YAML of a preset file; a one-line StudyError when it cannot be read or parsed."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise StudyError(f"{path}: cannot read preset ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise StudyError(f"{path}: malformed YAML ({str(err).splitlines()[0]})") from None


def load_preset(preset: str | os.PathLike) -> tuple[dict, dict]:
    """(training config, study settings) of a preset file."""
    path = preset_path(preset)
    data = read_preset(path)
    if not isinstance(data, dict):
        raise StudyError(f"{path}: a preset is a mapping with study, trainer, model and data sections")
    unknown = sorted(set(data) - {"study", *TRAIN_SECTIONS})
    if unknown:
        raise StudyError(f"{path}: unknown top-level keys {unknown} (expected study, {', '.join(TRAIN_SECTIONS)})")
    for section in ("trainer", "model", "data"):
        if not isinstance(data.get(section), dict):
            raise StudyError(f"{path}: no {section}: section")
    study = data.get("study") or {}
    unknown = sorted(set(study) - set(STUDY_DEFAULTS))
    if unknown:
        raise StudyError(f"{path}: unknown study keys {unknown} (known: {', '.join(STUDY_DEFAULTS)})")
    settings = {**copy.deepcopy(STUDY_DEFAULTS), **study}
    if not isinstance(settings["losses"], dict):
        raise StudyError(f"{path}: study.losses maps each variant name to its model.detector keys "
                         "(see configs/ablation/quick.yaml)")
    config = {k: data[k] for k in TRAIN_SECTIONS if k in data}
    return config, settings


__all__ = ["PRESET_DIR", "STUDY_DEFAULTS", "TRAIN_SECTIONS", "StudyError", "load_preset", "preset_path",
           "read_preset"]
