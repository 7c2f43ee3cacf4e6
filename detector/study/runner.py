"""Run the variants of a loss study one after another, each through the project's LightningCLI.

A preset (configs/ablation/*.yaml) is a training config (seed_everything, trainer, model, data,
as scripts/train.py reads them) plus a `study:` section. For each variant the runner writes
the variant's own complete training config, `OUT/runs/<variant>/config.yaml`: the preset's
training sections, then the study settings (steps, evaluations, schedule), then the variant's
loss settings, and trains it with `detector.cli.run_cli(["fit", "--config", that file])`, the
code path of scripts/train.py. (`python scripts/train.py fit --config OUT/runs/<v>/config.yaml`
trains that variant again by hand.)

Output folder OUT:

    results.csv, results.md, *.png     the table and the plots (detector.study.report)
    study.json                          the settings, the command, the settings' fingerprint
    tb/<variant>/                       one TensorBoard run per variant (tensorboard --logdir OUT/tb)
    runs/<variant>/config.yaml          the variant's training config
    runs/<variant>/train.csv, val.csv   its record (detector.study.recorder)
    runs/<variant>/stats.json           end-of-training loss statistics (detector.study.stats)
    runs/<variant>/result.json          its row of the table, written last (atomically): done
    runs/<variant>/checkpoints/last.ckpt  while it trains: the resume point, git-ignored
    checkpoints/<variant>/final.pt      the trained model (study.save_models), git-ignored

A rerun skips every variant that has its result.json, and resumes the variant that was training
from its last checkpoint (runs/<variant>/checkpoints/last.ckpt, written atomically after every
validation; exact on CPU, see docs/reliability.md): a killed study loses at most the steps since the
last validation. (A variant whose config.yaml changed, or that has no checkpoint yet, starts again
from step 0, its partial folders removed first; the checkpoint is deleted when the variant ends.) A folder
belongs to one set of settings: rerunning into it with other settings (steps, data, image size,
overrides) is refused, so that every row of a table was trained alike.

A variant whose loss turns non-finite (RetinaNetModule raises NonFiniteLossStop; run_cli returns
3) is a result: a "diverged" row with the step it happened at. Any other failure stops the study.

Several GPUs: `launch_shards` starts one process per GPU (CUDA_VISIBLE_DEVICES) with
`--shard k/n`; shard k trains variants k, k + n, k + 2n, ... of the list; the parent writes the
report when all are done.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .records import METRICS, read_rows, write_atomic
from .variants import Variant, parse_variants

REPO_ROOT = Path(__file__).resolve().parents[2]
PRESET_DIR = REPO_ROOT / "configs" / "ablation"
#: The final losses are the mean of the last this-many training steps.
FINAL_LOSS_WINDOW = 20
TRAIN_SECTIONS = ("seed_everything", "trainer", "model", "data")
_SHARD_CHILD = "DETECTOR_STUDY_SHARD_CHILD"

STUDY_DEFAULTS: dict[str, Any] = {
    "variants": ["ce_no_prior", "ce_prior", "focal_g2_a0.25"],
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
#: Settings that joined the study after results were made: in the fingerprint only when set.
OPTIONAL_SHARED = ("foreground_prior", "low_score_thresh")

#: Keys the study sets itself: overriding them for the whole study would break its promises.
MANAGED_KEYS: dict[str, str] = {
    "trainer.max_steps": "--max-steps",
    "trainer.val_check_interval": "--evals",
    "trainer.check_val_every_n_epoch": "--evals",
    "trainer.logger": "(the study writes OUT/tb/<variant>)",
    "trainer.default_root_dir": "--out",
    "trainer.callbacks": "(the study adds its recorder)",
    "model.milestones": "study.milestone_fractions in the preset",
    "model.detector.cls_loss": "--variants",
    "model.detector.alpha": "--variants",
    "model.detector.gamma": "--variants",
    "model.detector.prior_prob": "--variants",
    "model.detector.ohem_neg_pos_ratio": "--variants (ohem_1to<R>)",
    "checkpoint": "(the study saves OUT/checkpoints/<variant>/final.pt)",
}


class StudyError(RuntimeError):
    """A study that cannot run as asked (bad preset, mixed settings, a variant that crashed)."""


# ---------------------------------------------------------------------------------------------
# Presets and overrides.


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


def load_preset(preset: str | os.PathLike) -> tuple[dict, dict]:
    """(training config, study settings) of a preset file."""
    path = preset_path(preset)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise StudyError(f"{path}: cannot read preset ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise StudyError(f"{path}: malformed YAML ({str(err).splitlines()[0]})") from None
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
    config = {k: data[k] for k in TRAIN_SECTIONS if k in data}
    return config, settings


def parse_overrides(tokens: list[str]) -> list[tuple[str, Any]]:
    """(dotted key, typed value) of `--section.key VALUE` / `--section.key=VALUE` tokens, read by the
    training config's own jsonargparse parser (detector.cli.training_parser): a key the config lacks,
    a value of the wrong type or a key the study sets itself is a one-line StudyError."""
    if not tokens:
        return []  # no Lightning import for a study without overrides
    from jsonargparse import ArgumentError, Namespace

    parser = _override_parser()
    try:
        given = parser.parse_args(list(tokens), defaults=False)
    except ArgumentError as err:
        raise StudyError(_override_error(str(err), parser)) from None
    pairs = [(key, _plain(value, Namespace)) for key, value in given.items(branches=False)]
    for key, _ in pairs:
        if _managed(key):
            raise StudyError(_managed(key))
    return pairs


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


def _override_error(message: str, parser) -> str:
    """jsonargparse's (multi-line) parse error as one line that names the option."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    first = lines[0] if lines else "cannot parse the overrides"
    bad_value = re.match(r'Parser key "([^"]+)"', first)
    if bad_value:
        key = bad_value.group(1)
        if _managed(key):
            return _managed(key)
        reason = next((line for line in lines[1:] if line.lstrip("- ").startswith("Expected")), None)
        reason = (reason or (lines[1] if len(lines) > 1 else "bad value")).lstrip("- ")
        return f"--{key}: bad value ({reason})"
    unknown = re.match(r"unrecognized arguments: (\S+)", first)
    if unknown:
        token = unknown.group(1)
        if not token.startswith("--"):
            return f"unexpected argument {token!r}: config overrides look like --data.root DIR"
        key = token[2:].partition("=")[0]
        if key.split(".")[0] not in TRAIN_SECTIONS:
            return f"--{key}: overrides start with one of {', '.join(TRAIN_SECTIONS)}"
        if _managed(key):
            return _managed(key)
        close = difflib.get_close_matches(key, list(parser.get_defaults().keys()), n=1)
        hint = f" (did you mean --{close[0]}?)" if close else ""
        return f"--{key}: no such setting in the training config{hint}"
    no_value = re.match(r"argument (--\S+): expected one argument", first)
    if no_value:
        return f"{no_value.group(1)} needs a value"
    return f"config overrides: {first}"


def set_key(config: dict, dotted: str, value: Any) -> None:
    """config["a"]["b"]["c"] = value for "a.b.c", making the missing levels."""
    node = config
    *parents, last = dotted.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


# ---------------------------------------------------------------------------------------------
# One study.


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
        detector = variant.detector_settings()
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
    chosen = parse_variants(variants if variants is not None else settings["variants"])
    settings["variants"] = [v.name for v in chosen]
    study = Study(preset=path, config=config, settings=settings, out=Path(out), overrides=pairs,
                  command=list(command or []))
    return study, chosen


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def _check_same_settings(study: Study) -> None:
    """Refuse an output folder that holds results made with other shared settings."""
    path = study.out / "study.json"
    if not path.is_file():
        return
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return
    if stored.get("fingerprint") == study.fingerprint:
        return
    old, new = _flatten(stored.get("shared", {})), _flatten(json.loads(json.dumps(study.shared(), default=str)))
    diffs = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    raise StudyError(
        f"{study.out} holds a study made with other settings ({'; '.join(diffs[:4]) or 'fingerprint differs'}); "
        "choose another --out, or delete that folder"
    )


def commands_with(path: Path, command: list[str]) -> list[str]:
    """The "commands" list of a JSON record file, with `command` appended unless it is the last one.

    A shard child (launch_shards) adds nothing: its parent records the command.
    """
    commands: list[str] = []
    if path.is_file():
        try:
            commands = list(json.loads(path.read_text(encoding="utf-8")).get("commands", []))
        except (OSError, json.JSONDecodeError):
            commands = []
    text = " ".join(shlex.quote(c) for c in command)
    if text and (not commands or commands[-1] != text) and not os.environ.get(_SHARD_CHILD):
        commands.append(text)
    return commands


def _write_study_json(study: Study) -> None:
    """OUT/study.json: the shared settings, their fingerprint, and every command that trained here."""
    path = study.out / "study.json"
    commands = commands_with(path, study.command)
    data = {
        "preset": str(study.preset), "commands": commands, "fingerprint": study.fingerprint,
        "variants": study.settings["variants"], "overrides": [f"--{k} {v}" for k, v in study.overrides],
        "shared": json.loads(json.dumps(study.shared(), default=str)),
    }  # fmt: skip
    write_atomic(path, json.dumps(data, indent=2) + "\n")
    gitignore = study.out / ".gitignore"
    if not gitignore.exists():
        write_atomic(gitignore, "# trained models: large, and remade by the study\ncheckpoints/\n")


def prepare_data(study: Study, log: Callable[[str], None] = print) -> None:
    """Generate the preset's synthetic data (study.synthetic) when its folder has none yet.

    An existing folder must have been made with the same knobs (its train.json records them).
    """
    data = study.config["data"]
    knobs = study.settings.get("synthetic")
    if data.get("dataset", "synthetic") != "synthetic" or not knobs:
        return
    from ..data.synthetic import make_synthetic, synthetic_exists

    root = Path(data.get("root", "data/synthetic"))
    if not synthetic_exists(root):
        log(f"[study] generating the synthetic data in {root} ({knobs})")
        try:
            make_synthetic(root, progress=False, **knobs)
        except TypeError as err:  # a knob make_synthetic does not have
            raise StudyError(f"study.synthetic: {err}") from None
        return
    info = json.loads((root / "train.json").read_text(encoding="utf-8")).get("info", {})
    spec = info.get("spec", {})
    expected = {k: v for k, v in knobs.items() if k not in ("num_train", "num_val", "seed")}
    diffs = [f"{k} {spec.get(k)!r} (wanted {v!r})" for k, v in expected.items() if spec.get(k) != v]
    if "seed" in knobs and info.get("seed") != knobs["seed"]:
        diffs.append(f"seed {info.get('seed')!r} (wanted {knobs['seed']!r})")
    if diffs:
        raise StudyError(f"{root} holds synthetic data made with other settings: {', '.join(diffs)}; "
                         "delete it, or point data.root elsewhere")


def _final_losses(run_dir: Path) -> dict[str, float | None]:
    rows = read_rows(run_dir / "train.csv")
    out: dict[str, float | None] = {}
    for key in ("loss_cls", "loss_box"):
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "")][-FINAL_LOSS_WINDOW:]
        out[f"final_{key}"] = round(sum(values) / len(values), 5) if values else None
    return out


def _last_val(run_dir: Path) -> dict[str, Any]:
    rows = read_rows(run_dir / "val.csv")
    if not rows:
        return {}
    return {k: (float(rows[-1][k]) if rows[-1].get(k) not in (None, "") else None) for k in METRICS} | {
        "step": int(rows[-1]["step"])}


def variant_config_text(study: Study, variant: Variant) -> str:
    """runs/<variant>/config.yaml's text: a header, then the variant's training config.

    A resume compares it with the file on disk byte for byte: a change here restarts interrupted runs.
    """
    config_path = study.run_dir(variant) / "config.yaml"
    header = (f"# Variant {variant.name} of the loss study in {study.out} (preset {study.preset}).\n"
              f"# Written by detector.study.runner; train it alone with:\n"
              f"#   python scripts/train.py fit --config {config_path}\n")
    return header + yaml.safe_dump(study.variant_config(variant), sort_keys=False)


def run_variant(study: Study, variant: Variant, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train one variant through run_cli and write its result.json; returns the result."""
    from ..cli import run_cli

    run_dir = study.run_dir(variant)
    config_path = run_dir / "config.yaml"
    config_text = variant_config_text(study, variant)
    resume = resume_point(study, variant, config_text)
    if resume is None:
        for stale in (run_dir, study.out / "tb" / variant.name, study.out / "checkpoints" / variant.name):
            shutil.rmtree(stale, ignore_errors=True)  # a partial run of an earlier, killed study
        run_dir.mkdir(parents=True)
        config_path.write_text(config_text, encoding="utf-8")
        args = ["fit", "--config", str(config_path)]
    else:
        log(f"[study] {variant.name}: resuming from {resume}")
        args = ["fit", "--config", str(config_path), "--ckpt_path", str(resume)]
    start = time.perf_counter()
    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI reads only `args` here, not the study's options
    try:
        rc = run_cli(args)
    finally:
        sys.argv = argv
    minutes = (time.perf_counter() - start) / 60
    result: dict[str, Any] = {**variant.row(), **{k: None for k in METRICS}}
    diverged_path = run_dir / "diverged.json"
    if diverged_path.is_file():
        diverged = json.loads(diverged_path.read_text(encoding="utf-8"))
        result.update({"final_loss_cls": None, "final_loss_box": None, "diverged": True,
                       "diverged_step": diverged["step"], "steps": diverged["step"], "message": diverged["message"]})
    elif rc == 0 and (run_dir / "end.json").is_file():
        end = json.loads((run_dir / "end.json").read_text(encoding="utf-8"))
        minutes = end.get("seconds", minutes * 60) / 60  # the recorder's: counts the time before a resume
        last = _last_val(run_dir)
        result.update({k: last.get(k) for k in METRICS})
        result.update({**_final_losses(run_dir), "diverged": False, "diverged_step": None, "steps": end["steps"]})
        result.update(end.get("low_threshold", {}))
    else:
        raise StudyError(f"variant {variant.name} failed (exit status {rc}) without a non-finite loss; "
                         "see the messages above")
    result.update({"minutes": round(minutes, 2), "clip": variant.clip, "lr": variant.lr, "seed": variant.seed,
                   "paper_ap": variant.paper_ap(), "fingerprint": study.fingerprint})
    write_atomic(run_dir / "result.json", json.dumps(result, indent=2) + "\n")
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # the resume point is no longer needed
    return result


def resume_point(study: Study, variant: Variant, config_text: str) -> Path | None:
    """The last.ckpt of this variant's interrupted run in study.out, if it can be resumed.

    It can when the run wrote a checkpoint and its config.yaml is the one this study would write
    (the same settings, the same paths); otherwise the variant starts again from step 0.
    """
    run_dir = study.run_dir(variant)
    last = run_dir / "checkpoints" / "last.ckpt"
    if (run_dir / "result.json").exists() or not last.is_file():
        return None
    try:
        same = (run_dir / "config.yaml").read_text(encoding="utf-8") == config_text
    except OSError:
        return None
    return last if same else None


def load_results(out: str | os.PathLike) -> list[dict[str, Any]]:
    """Every finished variant's result.json in an output folder."""
    results = []
    for path in sorted(Path(out).glob("runs/*/result.json")):
        try:
            results.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue  # being written by another shard: atomic replace makes this rare
    return results


def run_study(study: Study, variants: list[Variant], *, shard: tuple[int, int] | None = None, force: bool = False,
              report: bool = True, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train the variants not yet finished in study.out (this shard's share), then report.

    Returns every result in the folder. `force` retrains finished variants of the list.
    """
    study.out.mkdir(parents=True, exist_ok=True)
    _check_same_settings(study)
    _write_study_json(study)
    prepare_data(study, log)
    mine = variants if shard is None else variants[shard[0]::shard[1]]
    from .report import write_report, write_tables

    for i, variant in enumerate(mine, 1):
        done = study.run_dir(variant) / "result.json"
        if done.is_file() and not force:
            previous = json.loads(done.read_text(encoding="utf-8"))
            log(f"[study] {i}/{len(mine)} {variant.name}: finished before, skipped "
                f"({'diverged' if previous.get('diverged') else 'AP ' + _fmt(previous.get('AP'))})")
            continue
        log(f"[study] {i}/{len(mine)} {variant.name}: training {study.max_steps} steps, "
            f"validating every {study.val_interval}")
        result = run_variant(study, variant, log)
        if result["diverged"]:
            log(f"[study] {variant.name}: diverged at step {result['diverged_step']} ({result['minutes']:.1f} min)")
        else:
            log(f"[study] {variant.name}: AP {_fmt(result['AP'])} AP50 {_fmt(result['AP50'])} "
                f"({result['minutes']:.1f} min)")
        write_tables(study.out, load_results(study.out), study)
    results = load_results(study.out)
    if report:
        write_report(study.out, results, study)
        log(f"[study] table: {study.out / 'results.md'}; plots: {study.out}/*.png")
    return results


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


def launch_shards(script: str, argv: list[str], gpus: list[str], out: Path,
                  log: Callable[[str], None] = print) -> int:
    """Run `script argv --shard k/n` once per GPU (CUDA_VISIBLE_DEVICES=gpu), in parallel.

    Each shard's output goes to OUT/logs/shard<k>.log. Returns the worst exit status.
    """
    (out / "logs").mkdir(parents=True, exist_ok=True)
    procs = []
    for k, gpu in enumerate(gpus):
        log_path = out / "logs" / f"shard{k}.log"
        cmd = [sys.executable, script, *argv, "--shard", f"{k}/{len(gpus)}", "--no-report"]
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu, _SHARD_CHILD: "1"}  # the parent records the command
        log(f"[study] shard {k}/{len(gpus)} on GPU {gpu}: log {log_path}")
        procs.append(subprocess.Popen(cmd, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT))
    return max(p.wait() for p in procs)


__all__ = ["Study", "StudyError", "build_study", "run_study", "run_variant", "load_results", "launch_shards"]
