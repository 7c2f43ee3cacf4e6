"""Study presets: configs/ablation/*.yaml read into a training config and the study's settings.

A preset is a training config (seed_everything, trainer, model, data, as scripts/train.py reads them) and a
`study:` section (STUDY_DEFAULTS; the lab's: detector.study.plan.LAB_DEFAULTS). `--section.key VALUE`
overrides apply to every run; the training config's own jsonargparse parser checks their keys and types, and
keys the study sets itself (MANAGED_KEYS) are refused. Every module of the study raises StudyError.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import yaml


PRESET_DIR = Path(__file__).resolve().parents[2] / "configs" / "ablation"
TRAIN_SECTIONS = ("seed_everything", "trainer", "model", "data")

STUDY_DEFAULTS: dict[str, Any] = {
    "variants": ["ce_no_prior", "ce_prior", "focal_g2_a0.25"], "max_steps": 500, "evals": 5,
    "losses": None,  # {name: model.detector keys}: the variants' settings (detector.study.variants)
    "milestone_fractions": [0.667, 0.889], "stats_images": 64, "gammas": [0.0, 0.5, 1.0, 2.0, 5.0],
    "save_models": True, "synthetic": None,
    "foreground_prior": None,  # the bias init of `sampling_free` variants: measured by the imbalance lab
    "low_score_thresh": None,  # also evaluate the final model at this score threshold (e.g. 0.001)
}  # fmt: skip


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


def load_preset(preset: str | os.PathLike, defaults: dict[str, Any] = STUDY_DEFAULTS,
                required: tuple[str, ...] = ("losses",)) -> tuple[dict, dict]:
    """(training config, study settings) of a preset file: its study section over `defaults`, whose keys are the
    known ones (a lab preset's: detector.study.plan.LAB_DEFAULTS); `required` keys must be set."""
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
    unknown = sorted(set(study) - set(defaults))
    if unknown:
        raise StudyError(f"{path}: unknown study keys {unknown} (known: {', '.join(defaults)})")
    settings = {**copy.deepcopy(defaults), **study}
    missing = [k for k in required if not settings.get(k)]
    if missing:
        raise StudyError(f"{path}: the study section needs {', '.join(missing)}")
    if not isinstance(settings["losses"], dict):
        raise StudyError(f"{path}: study.losses maps each variant name to its model.detector keys "
                         "(see configs/ablation/quick.yaml)")
    config = {k: data[k] for k in TRAIN_SECTIONS if k in data}
    return config, settings


#: Keys the study sets itself: overriding them for the whole study would break its promises.
MANAGED_KEYS: dict[str, str] = {
    "trainer.max_steps": "--max-steps",
    "trainer.val_check_interval": "--evals",
    "trainer.check_val_every_n_epoch": "--evals",
    "trainer.logger": "(the study writes OUT/tb/<variant>)",
    "trainer.default_root_dir": "--out",
    "trainer.callbacks": "(the study adds its timer)",
    "trainer.log_every_n_steps": "(the study logs every step)",
    "model.milestones": "study.milestone_fractions in the preset",
    "model.detector.cls_loss": "--variants",
    "model.detector.alpha": "--variants",
    "model.detector.gamma": "--variants",
    "model.detector.prior_prob": "--variants",
    "model.detector.ohem_neg_pos_ratio": "--variants (ohem_1to<R>)",
    "checkpoint": "(the study saves OUT/checkpoints/<variant>/final.pt)",
}


def parse_overrides(tokens: list[str]) -> list[tuple[str, Any]]:
    """(dotted key, typed value) of `--section.key VALUE` / `--section.key=VALUE` tokens, read by the
    training config's own jsonargparse parser (detector.cli.training_parser): a key the config lacks,
    a value of the wrong type or a key the study sets itself is a one-line StudyError."""
    if not tokens:
        return []  # no Lightning import for a study without overrides
    from jsonargparse import ArgumentError, Namespace

    for token in tokens:
        if token.startswith("--") and (refusal := _managed(token[2:].partition("=")[0])):
            raise StudyError(refusal)
    try:
        given = _override_parser().parse_args(list(tokens), defaults=False)
    except ArgumentError as err:  # the parser's message, its first two lines (key, reason) as one
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise StudyError(f"config overrides: {' '.join(lines[:2])}") from None
    return [(key, _plain(value, Namespace)) for key, value in given.items(branches=False)]


@functools.lru_cache(maxsize=1)
def _override_parser():
    from ..cli import training_parser
    from ..quiet import silence_third_party_noise

    silence_third_party_noise()
    return training_parser()


def _plain(value: Any, namespace: type) -> Any:
    """A parsed value as the YAML/JSON of a config file holds it (class specs inside lists are Namespaces)."""
    if isinstance(value, namespace):
        return value.as_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v, namespace) for v in value]
    return value


def _managed(key: str) -> str | None:
    """The refusal of a key the study sets itself, or None."""
    for managed, instead in MANAGED_KEYS.items():
        if key == managed or key.startswith(managed + "."):
            return f"--{key} is set by the study; use {instead}"
    return None


def set_key(config: dict, dotted: str, value: Any) -> None:
    """config["a"]["b"]["c"] = value for "a.b.c", making the missing levels."""
    node = config
    *parents, last = dotted.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value
