"""A loss study's plan: the settings every variant shares, their fingerprint, each variant's config.

`build_study` resolves a preset and the command line's values (steps, evaluations, image size,
overrides, variants) into a Study. `Study.variant_config(variant)` is the variant's complete
training config: the preset's training sections, then the study settings (steps, evaluations,
schedule, the recorder, the resume checkpoint, the output paths), then the variant's loss
settings; detector.study.runner writes it to OUT/runs/<variant>/config.yaml and trains it.

`Study.fingerprint` hashes what must be equal for two results to share a table: every result.json
carries it, and an output folder holds results of one fingerprint only (detector.study.folder).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .overrides import parse_overrides, set_key
from .presets import StudyError, load_preset, preset_path
from .variants import Variant, parse_variants

#: Settings that joined the study after results were made: in the fingerprint only when set.
OPTIONAL_SHARED = ("foreground_prior", "low_score_thresh")


@dataclass
class Study:
    """The resolved settings of one study: what every variant shares."""

    preset: Path
    config: dict  # the shared training config (before the variant and the output paths)
    settings: dict  # the study section, with the command line's values
    out: Path
    overrides: list[tuple[str, Any]] = field(default_factory=list)
    command: list[str] = field(default_factory=list)

    @property
    def max_steps(self) -> int:
        return int(self.settings["max_steps"])

    @property
    def val_interval(self) -> int:
        return max(1, math.ceil(self.max_steps / int(self.settings["evals"])))

    def shared(self) -> dict:
        """What must be equal for two results to share a table (hashed into the fingerprint)."""
        keys = ("max_steps", "evals", "milestone_fractions", "stats_images", "gammas", "synthetic")
        optional = {k: self.settings[k] for k in OPTIONAL_SHARED if self.settings.get(k) is not None}
        return {"config": self.config, **{k: self.settings[k] for k in keys}, **optional}

    @property
    def fingerprint(self) -> str:
        text = json.dumps(self.shared(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def run_dir(self, variant: Variant) -> Path:
        return self.out / "runs" / variant.name

    def variant_config(self, variant: Variant) -> dict:
        """The complete training config of one variant (what runs/<variant>/config.yaml holds)."""
        config = copy.deepcopy(self.config)
        run_dir = self.run_dir(variant)
        trainer = config["trainer"]
        trainer.update({
            "max_steps": self.max_steps,
            "val_check_interval": self.val_interval,
            "check_val_every_n_epoch": None,
            "num_sanity_val_steps": 0,
            "default_root_dir": str(run_dir),
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": str(self.out / "tb"), "name": variant.name, "version": ""}},
        })  # fmt: skip
        recorder = {
            "class_path": "detector.study.recorder.StudyRecorder",
            "init_args": {
                "out_dir": str(run_dir), "stats_images": int(self.settings["stats_images"]),
                "gammas": [float(g) for g in self.settings["gammas"]],
                "model_path": str(self.out / "checkpoints" / variant.name / "final.pt")
                if self.settings["save_models"] else None,
                "low_score_thresh": self.settings.get("low_score_thresh"),
            },
        }  # fmt: skip
        trainer["callbacks"] = [recorder, *(trainer.get("callbacks") or [])]
        if variant.clip is not None:
            trainer["gradient_clip_val"] = variant.clip
        # last.ckpt after every validation: the resume point of a killed study (the recorder saves the
        # final model; the runner deletes the checkpoint when the variant ends)
        config["checkpoint"] = {"dirpath": str(run_dir / "checkpoints"), "save_top_k": 0, "save_last": True,
                                "monitor": None}
        model = config["model"]
        model["milestones"] = [round(f * self.max_steps) for f in self.settings["milestone_fractions"]]
        if variant.lr is not None:
            model["lr"] = variant.lr
        if variant.seed is not None:
            config["seed_everything"] = variant.seed
        detector = dict(variant.detector)
        if variant.prior_from_data:
            prior = self.settings.get("foreground_prior")
            if not prior:
                raise StudyError(f"{variant.name} takes its bias init from the data: the study needs foreground_prior "
                                 "(the imbalance lab measures it; or set study.foreground_prior in the preset)")
            detector["prior_prob"] = float(prior)
        model.setdefault("detector", {}).update(detector)
        return config


def build_study(preset: str | os.PathLike, out: str | os.PathLike, *, variants: str | list[str] | None = None,
                max_steps: int | None = None, evals: int | None = None, image_size: int | None = None,
                overrides: list[str] | None = None, command: list[str] | None = None) -> tuple[Study, list[Variant]]:
    """The study a preset and the command line's values describe, and its variants."""
    path = preset_path(preset)
    config, settings = load_preset(path)
    if max_steps is not None:
        settings["max_steps"] = max_steps
    if evals is not None:
        settings["evals"] = evals
    if int(settings["max_steps"]) < 1 or int(settings["evals"]) < 1:
        raise StudyError("max_steps and evals must be at least 1")
    if image_size is not None:
        for key in ("data.min_size", "data.max_size", "model.detector.min_size", "model.detector.max_size"):
            set_key(config, key, image_size)
    pairs = parse_overrides(list(overrides or []))
    for key, value in pairs:
        set_key(config, key, value)
    chosen = parse_variants(variants if variants is not None else settings["variants"], settings["losses"])
    settings["variants"] = [v.name for v in chosen]
    study = Study(preset=path, config=config, settings=settings, out=Path(out), overrides=pairs,
                  command=list(command or []))
    return study, chosen


__all__ = ["OPTIONAL_SHARED", "Study", "build_study"]
