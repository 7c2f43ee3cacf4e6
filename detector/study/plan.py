"""A study's preset and plan: the settings its runs share, their fingerprint, each run's training config.

A preset (configs/ablation/*.yaml) is a training config (seed_everything, trainer, model, data, as
scripts/train.py reads them) and a `study:` section (STUDY_DEFAULTS; a lab's: LAB_DEFAULTS). `--section.key
VALUE` overrides apply to every run; the training config's own jsonargparse parser checks their keys and types,
and keys the study sets itself (MANAGED_KEYS) are refused. Every module of the study raises StudyError.

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
import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .variants import Variant, VariantError, parse_variant, parse_variants


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
        known = ", ".join(preset_names()) or "none"
        raise StudyError(f"no preset {preset!r} (known: {known}; or give a path to a YAML file)")
    return named


def preset_names() -> list[str]:
    """The presets in PRESET_DIR: its YAML files with a study section (the others are plain training configs)."""
    return [p.stem for p in sorted(PRESET_DIR.glob("*.yaml")) if "study" in (read_preset(p) or {})]


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
    known ones (a lab preset's: LAB_DEFAULTS); `required` keys must be set."""
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

    for key in (t[2:].partition("=")[0] for t in tokens if t.startswith("--")):
        for managed, instead in MANAGED_KEYS.items():
            if key == managed or key.startswith(managed + "."):
                raise StudyError(f"--{key} is set by the study; use {instead}")
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


def set_key(config: dict, dotted: str, value: Any) -> None:
    """config["a"]["b"]["c"] = value for "a.b.c", making the missing levels."""
    node = config
    *parents, last = dotted.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


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


def _resolve(preset: str | os.PathLike, defaults: dict[str, Any], required: tuple[str, ...], overrides: list[str] | None,
             evals: int | None, image_size: int | None = None) -> tuple[Path, dict, dict, list[tuple[str, Any]]]:
    """(preset path, training config, study settings, parsed overrides): the preset read, the command line's
    image size and then its overrides set in the config, its --evals in the settings."""
    path = preset_path(preset)
    config, settings = load_preset(path, defaults, required)
    if evals is not None:
        settings["evals"] = evals
    if image_size is not None:
        for key in ("data.min_size", "data.max_size"):  # the data's key only: the model reads it
            set_key(config, key, image_size)
    pairs = parse_overrides(list(overrides or []))
    for key, value in pairs:
        set_key(config, key, value)
    return path, config, settings, pairs


def build_study(preset: str | os.PathLike, out: str | os.PathLike, *, variants: str | list[str] | None = None,
                max_steps: int | None = None, evals: int | None = None, image_size: int | None = None,
                overrides: list[str] | None = None, command: list[str] | None = None) -> tuple[Study, list[Variant]]:
    """The study a preset and the command line's values describe, and its variants."""
    path, config, settings, pairs = _resolve(preset, STUDY_DEFAULTS, ("losses",), overrides, evals, image_size)
    if max_steps is not None:
        settings["max_steps"] = max_steps
    if int(settings["max_steps"]) < 1 or int(settings["evals"]) < 1:
        raise StudyError("max_steps and evals must be at least 1")
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
    """An imbalance level: its synthetic data knobs (the lab's, the level's own over them), its steps, and `lrs`,
    (optimizer, grid) pairs replacing an optimizer's grid here (still one grid for every loss)."""

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
        canvas = int(level.synthetic.get("canvas", 1))
        if canvas > 1:  # the canvas is the image: trained and evaluated whole, never resized down
            side = canvas * synthetic_side(level.synthetic)
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
                    "synthetic": level.synthetic,
                    "foreground_prior": round(stats["foreground_fraction"], 8) if stats else None}
        return Study(preset=self.preset, config=config, settings=settings, out=self.cell_dir(level, optimizer),
                     overrides=self.overrides, command=self.command)

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


def synthetic_side(knobs: dict) -> int:
    """The side (px) of the images make_synthetic draws with these knobs: its image_size, 256 by default."""
    return int(knobs.get("image_size", 256))


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
    path, config, settings, pairs = _resolve(preset, LAB_DEFAULTS, ("levels", "optimizers", "losses"), overrides, evals)
    all_levels = [
        Level(name=str(lv["name"]), synthetic={**settings["synthetic"], **(lv.get("synthetic") or {})},
              max_steps=int(max_steps or lv["max_steps"]),
              root=str(lv.get("root") or f"data/imbalance_{lv['name']}_{synthetic_side(settings['synthetic'])}"),
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
