"""A study's plan: the settings its runs share, their fingerprint, each run's training config.

`build_study` resolves a preset and the command line into a Study; `Study.variant_config(variant)` is a
variant's complete training config (the preset's sections, the study's steps, validations, schedule, logging,
resume checkpoint and output paths, the variant's loss), written to OUT/runs/<variant>/config.yaml. Every
result.json carries `Study.fingerprint`, and a folder holds one fingerprint only.

The imbalance lab (`build_lab`, a preset whose study section names imbalance *levels*, *optimizers* with one
lr grid for every loss, and the *losses*): every (level, optimizer) is a loss study in OUT/<level>_<optimizer>/
whose variants are `<loss>+lr<V>` (the grid, at the preset's seed) and `<loss>+lr<best>+seed<S>`; how it
runs: detector.study.runner; its tables and figures: detector.study.report, .plots.
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

from .presets import StudyError, load_preset, parse_overrides, preset_path, read_preset, set_key
from .variants import Variant, VariantError, parse_variant, parse_variants


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
            "max_steps": self.max_steps, "val_check_interval": self.val_interval, "check_val_every_n_epoch": None,
            "num_sanity_val_steps": 0, "default_root_dir": str(run_dir), "log_every_n_steps": 1,
            "logger": [  # TensorBoard for a person; every step's values, read back by the runner, in CSV
                {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                 "init_args": {"save_dir": str(self.out / "tb"), "name": variant.name, "version": ""}},
                {"class_path": "lightning.pytorch.loggers.CSVLogger",
                 "init_args": {"save_dir": str(run_dir), "name": "csv", "flush_logs_every_n_steps": 1}}],
        })  # fmt: skip
        # the Timer's elapsed time is part of every checkpoint: a resumed run's minutes count the part before
        timer = {"class_path": "lightning.pytorch.callbacks.Timer", "init_args": {"interval": "step", "verbose": False}}
        trainer["callbacks"] = [timer, *(trainer.get("callbacks") or [])]
        if variant.clip is not None:
            trainer["gradient_clip_val"] = variant.clip
        # last.ckpt after every validation: the resume point of a killed study, deleted when the variant ends
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
        for key in ("data.min_size", "data.max_size"):  # the data's key only: the model reads it
            set_key(config, key, image_size)
    pairs = parse_overrides(list(overrides or []))
    for key, value in pairs:
        set_key(config, key, value)
    chosen = parse_variants(variants if variants is not None else settings["variants"], settings["losses"])
    settings["variants"] = [v.name for v in chosen]
    study = Study(preset=path, config=config, settings=settings, out=Path(out), overrides=pairs,
                  command=list(command or []))
    return study, chosen


#: A lab preset's study keys and their defaults (levels, optimizers and losses: the preset's own).
LAB_DEFAULTS: dict[str, Any] = {
    "levels": None, "optimizers": None, "losses": None, "seeds": [0, 1], "synthetic": {}, "evals": 4,
    "milestone_fractions": [0.667, 0.889], "stats_images": 64, "gammas": [0.0, 0.5, 1.0, 2.0, 5.0],
    "save_models": False, "low_score_thresh": 0.001,
}  # fmt: skip


class LabError(StudyError):
    """A lab preset or command line that cannot run as asked."""


@dataclass(frozen=True)
class Level:
    """An imbalance level: synthetic data knobs (over the lab's), its steps, and `lrs`, (optimizer, grid) pairs
    replacing an optimizer's grid here (still one grid for every loss)."""

    name: str
    synthetic: dict
    max_steps: int
    root: str
    lrs: tuple[tuple[str, tuple[float, ...]], ...] = ()


@dataclass(frozen=True)
class Optimizer:
    """One optimizer: the `model:` keys it sets, its lr grid (at the reference batch) and its recipe lr."""

    name: str
    model: dict
    lrs: tuple[float, ...]
    recipe_lr: float


@dataclass
class Lab:
    preset: Path
    config: dict  # the training sections shared by every run
    settings: dict  # the study section
    out: Path
    levels: list[Level]
    optimizers: list[Optimizer]
    losses: list[str]
    seeds: list[int]
    overrides: list[tuple[str, Any]] = field(default_factory=list)
    command: list[str] = field(default_factory=list)

    def cell_dir(self, level: Level, optimizer: Optimizer) -> Path:
        return self.out / f"{level.name}_{optimizer.name}"

    def level_stats(self, level: Level) -> dict | None:
        path = self.out / "levels" / f"{level.name}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def level_config(self, level: Level) -> dict:
        """The training sections at one level: its data, and at a canvas level its image size (the canvas's)."""
        config = copy.deepcopy(self.config)
        config["data"]["root"] = level.root
        canvas = int(self.synthetic(level).get("canvas", 1))
        if canvas > 1:  # the canvas is the image: trained and evaluated whole, never resized down
            side = canvas * int(self.synthetic(level).get("image_size", 256))
            config["data"].update(min_size=side, max_size=side)
        return config

    def cell_study(self, level: Level, optimizer: Optimizer) -> Study:
        """The loss study of one (level, optimizer): the level's data and steps, the optimizer's recipe."""
        config = self.level_config(level)
        config["model"].update(copy.deepcopy(optimizer.model))
        config["model"]["lr"] = optimizer.recipe_lr
        stats = self.level_stats(level)
        keep = ("evals", "milestone_fractions", "stats_images", "gammas", "save_models", "low_score_thresh")
        settings = {**{k: self.settings.get(k) for k in keep}, "variants": [], "max_steps": level.max_steps,
                    "synthetic": self.synthetic(level),
                    "foreground_prior": round(stats["foreground_fraction"], 8) if stats else None}
        return Study(preset=self.preset, config=config, settings=settings, out=self.cell_dir(level, optimizer),
                     overrides=self.overrides, command=self.command)

    def synthetic(self, level: Level) -> dict:
        return {**self.settings["synthetic"], **level.synthetic}

    def grid(self, level: Level, optimizer: Optimizer) -> tuple[float, ...]:
        """The lr grid of one (level, optimizer): the level's own if it names one, else the optimizer's."""
        return dict(level.lrs).get(optimizer.name, optimizer.lrs)

    def grids(self) -> dict[tuple[str, str], tuple[float, ...]]:
        """{(level, optimizer): lr grid} of every level and optimizer of the lab."""
        return {(lv.name, o.name): self.grid(lv, o) for lv in self.levels for o in self.optimizers}

    def variant(self, name: str) -> Variant:
        """A run of the lab by its name (`focal_g2_a0.25+lr0.002+seed1`), its loss from the preset's study.losses."""
        return parse_variant(name, self.settings["losses"])

    def grid_variants(self, level: Level, optimizer: Optimizer) -> list[Variant]:
        """Every (loss, lr) of the grid at the preset's seed, losses first, in the preset's order."""
        return [self.variant(f"{loss}+lr{lr!r}") for loss in self.losses for lr in self.grid(level, optimizer)]


def is_lab_preset(preset: str | os.PathLike) -> bool:
    """Whether a preset describes an imbalance lab (its study section has levels)."""
    try:
        data = read_preset(preset_path(preset))
    except StudyError:
        return False
    return isinstance(data, dict) and isinstance(data.get("study"), dict) and "levels" in data["study"]


def _pick(items: list, names: str | None, what: str) -> list:
    if not names:
        return items
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {i.name: i for i in items}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise LabError(f"unknown {what} {', '.join(unknown)} (the preset has {', '.join(known)})")
    return [known[n] for n in wanted]


def build_lab(preset: str | os.PathLike, out: str | os.PathLike, *, levels: str | None = None,
              optimizers: str | None = None, losses: str | None = None, lrs: str | None = None,
              seeds: str | None = None, max_steps: int | None = None, evals: int | None = None,
              overrides: list[str] | None = None, command: list[str] | None = None) -> Lab:
    """The lab a preset and the command line describe (a selection of its levels, optimizers, ...); `lrs`
    replaces every grid, `max_steps` every level's steps (pilots: a folder holds one set of settings)."""
    path = preset_path(preset)
    config, settings = load_preset(path, LAB_DEFAULTS, required=("levels", "optimizers", "losses"))
    pairs = parse_overrides(list(overrides or []))
    for key, value in pairs:
        set_key(config, key, value)
    if evals is not None:
        settings["evals"] = evals
    all_levels = [
        Level(name=str(lv["name"]), synthetic=dict(lv.get("synthetic") or {}),
              max_steps=int(max_steps or lv["max_steps"]),
              root=str(lv.get("root") or f"data/imbalance_{lv['name']}_{settings['synthetic'].get('image_size', 256)}"),
              lrs=() if lrs else tuple((str(k), tuple(float(x) for x in v)) for k, v in (lv.get("lrs") or {}).items()))
        for lv in settings["levels"]
    ]  # fmt: skip
    all_optimizers = [Optimizer(name=name, model={k: v for k, v in spec.items() if k not in ("lrs", "recipe_lr")},
                                lrs=tuple(float(x) for x in (lrs.split(",") if lrs else spec["lrs"])),
                                recipe_lr=float(spec["recipe_lr"])) for name, spec in settings["optimizers"].items()]
    try:
        chosen_losses = [parse_variant(n, settings["losses"]).name
                         for n in (losses.split(",") if losses else settings["losses"])]
    except VariantError as err:
        raise LabError(str(err)) from None
    chosen_seeds = [int(s) for s in seeds.split(",")] if seeds else [int(s) for s in settings["seeds"]]
    if config.get("seed_everything") is not None and chosen_seeds[0] != int(config["seed_everything"]):
        raise LabError(f"the first seed is the grid's: it must be the preset's seed_everything "
                       f"({config['seed_everything']}), got {chosen_seeds[0]}")
    lab = Lab(preset=path, config=config, settings=settings, out=Path(out), levels=_pick(all_levels, levels, "level"),
              optimizers=_pick(all_optimizers, optimizers, "optimizer"), losses=chosen_losses, seeds=chosen_seeds,
              overrides=pairs, command=list(command or []))  # fmt: skip
    known = {o.name for o in all_optimizers}
    for name, grid in [(o.name, o.lrs) for o in lab.optimizers] + [(n, g) for lv in all_levels for n, g in lv.lrs]:
        if name not in known or not grid:
            raise LabError(f"an lr grid for unknown optimizer {name} (known: {', '.join(sorted(known))})"
                           if name not in known else f"an empty lr grid for {name}")
    return lab
