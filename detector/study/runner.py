"""Run the variants of a loss study one after another, each through the project's LightningCLI.

For each variant the runner writes its complete training config (Study.variant_config,
detector.study.plan) to `OUT/runs/<variant>/config.yaml` and trains it with
`detector.cli.run_cli(["fit", "--config", that file])`, the code path of scripts/train.py.
(`python scripts/train.py fit --config OUT/runs/<v>/config.yaml` trains that variant again by hand.)

Output folder OUT:

    results.csv, results.md, *.png     the table and the plots (detector.study.report, .plots)
    study.json                          the settings, the commands, the settings' fingerprint (.folder)
    tb/<variant>/                       one TensorBoard run per variant (tensorboard --logdir OUT/tb), git-ignored
    runs/<variant>/config.yaml          the variant's training config
    runs/<variant>/train.csv, val.csv   its record (detector.study.recorder)
    runs/<variant>/stats.json           end-of-training loss statistics (detector.study.stats)
    runs/<variant>/result.json          its row of the table, written last (atomically): done; with the
                                        commit of the code that finished it and whether the tree was dirty
    runs/<variant>/checkpoints/last.ckpt  while it trains: the resume point, git-ignored
    checkpoints/<variant>/final.pt      the trained model (study.save_models), git-ignored

A rerun skips every variant that has its result.json, and resumes the variant that was training
from its last checkpoint (runs/<variant>/checkpoints/last.ckpt, written atomically after every
validation; exact on CPU, see docs/reliability.md): a killed study loses at most the steps since the
last validation. (A variant whose config.yaml changed, or that has no checkpoint yet, starts again
from step 0, its partial folders removed first; the checkpoint is deleted when the variant ends.) A folder
belongs to one set of settings.

A variant whose loss turns non-finite (RetinaNetModule raises NonFiniteLossStop; run_cli returns
3) is a result: a "diverged" row with the step it happened at. Any other failure stops the study.

The output folder belongs to one set of settings: OUT/study.json holds the shared settings
(Study.shared), their fingerprint and every command that trained into it, and `check_same_settings`
refuses to train into a folder made with other settings, so that every row of a table was trained
alike. The preset's synthetic data (study.synthetic) is generated once into data.root; a folder
that already holds data must have been made with the same knobs (its train.json records them).

Several GPUs: `launch_shards` starts `script argv --shard k/n --no-report` once per GPU
(CUDA_VISIBLE_DEVICES); shard k trains runs k, k + n, ... of the list and the parent writes the
report when all are done (a shard child is marked in its environment: only the parent records the
command).

The imbalance lab (detector.study.plan.Lab): its levels measured, its runs planned and trained.

Stages: `grid` trains every (loss, lr) at the first seed; `seeds` trains each loss's best-of-grid
lr at the other seeds once its grid is complete; `all` does both. Finished runs are skipped and
a killed run resumes from its last checkpoint (the runner's rules), so the lab can be run in parts:
a level, an optimizer or a shard (`i/n` of one stage's ordered run list) at a time. Shards split
one stage at a time because within a stage the list is fixed; nothing else keeps two processes
off the same run. Each run is a variant of its (level, optimizer) cell's loss study, trained by
run_variant.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from .cells import best_cells
from .plan import Lab, LabError, Level, Optimizer, Study
from .presets import StudyError
from .records import METRICS, code_version, final_losses, last_validation, load_results, recorded_commands, write_atomic
from .report import cell_runs, write_lab_report, write_report, write_tables
from .variants import Variant


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
        last = last_validation(run_dir)
        result.update({k: last.get(k) for k in METRICS})
        result.update({**final_losses(run_dir), "diverged": False, "diverged_step": None, "steps": end["steps"]})
        result.update(end.get("low_threshold", {}))
    else:
        raise StudyError(f"variant {variant.name} failed (exit status {rc}) without a non-finite loss; "
                         "see the messages above")
    result.update({"minutes": round(minutes, 2), "clip": variant.clip, "lr": variant.lr, "seed": variant.seed,
                   "paper_ap": variant.paper_ap(), "fingerprint": study.fingerprint, **code_version()})
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


def prepare_study(study: Study, log: Callable[[str], None] = print) -> None:
    """Ready study.out to train into: the folder, its settings checked and recorded, the synthetic data made."""
    study.out.mkdir(parents=True, exist_ok=True)
    check_same_settings(study)
    write_study_json(study)
    prepare_data(study, log)


def run_study(study: Study, variants: list[Variant], *, shard: tuple[int, int] | None = None, force: bool = False,
              report: bool = True, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train the variants not yet finished in study.out (this shard's share), then report.

    Returns every result in the folder. `force` retrains finished variants of the list.
    """
    prepare_study(study, log)
    mine = variants if shard is None else variants[shard[0]::shard[1]]
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


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def check_same_settings(study: Study) -> None:
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

    A shard child (detector.study.runner) adds nothing: its parent records the command.
    """
    commands = recorded_commands(path)
    text = " ".join(shlex.quote(c) for c in command)
    if text and (not commands or commands[-1] != text) and not is_shard_child():
        commands.append(text)
    return commands


def write_study_json(study: Study) -> None:
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


_SHARD_CHILD = "DETECTOR_STUDY_SHARD_CHILD"


def is_shard_child() -> bool:
    """Whether this process is a shard that launch_shards started."""
    return bool(os.environ.get(_SHARD_CHILD))


def launch_shards(script: str, argv: list[str], gpus: list[str], out: Path,
                  log: Callable[[str], None] = print) -> int:
    """Run `script argv --shard k/n` once per GPU (CUDA_VISIBLE_DEVICES=gpu), in parallel.

    Each shard's output is appended to OUT/logs/shard<k>.log. Returns the worst exit status.
    """
    (out / "logs").mkdir(parents=True, exist_ok=True)
    procs = []
    for k, gpu in enumerate(gpus):
        log_path = out / "logs" / f"shard{k}.log"
        cmd = [sys.executable, script, *argv, "--shard", f"{k}/{len(gpus)}", "--no-report"]
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu, _SHARD_CHILD: "1"}  # the parent records the command
        log(f"[study] shard {k}/{len(gpus)} on GPU {gpu}: log {log_path}")
        procs.append(subprocess.Popen(cmd, env=env, stdout=log_path.open("a"), stderr=subprocess.STDOUT))
    return max(p.wait() for p in procs)


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


STAGES = ("grid", "seeds", "all")


def measure_level(lab: Lab, level: Level, log: Callable[[str], None] = print) -> dict:
    """The level's anchor statistics (cached in OUT/levels/<level>.json with the data's knobs)."""
    from .anchor_stats import anchor_statistics

    stats = lab.level_stats(level)
    if stats is not None and stats.get("synthetic") == lab.synthetic(level):
        return stats
    probe = Study(preset=lab.preset, config=lab.level_config(level), out=lab.out / "levels",
                  settings={"synthetic": lab.synthetic(level)})
    prepare_data(probe, log)
    folder = lab.out / "levels"
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / f"{level.name}.yaml"
    write_atomic(config_path, yaml.safe_dump(lab.level_config(level), sort_keys=False))
    log(f"[lab] level {level.name}: counting positive and negative anchors of the val split")
    stats = {**anchor_statistics(config_path, progress=False), "level": level.name, "synthetic": lab.synthetic(level)}
    write_atomic(folder / f"{level.name}.json", json.dumps(stats, indent=2) + "\n")
    log(f"[lab] level {level.name}: {stats['boxes_per_image']:.2f} objects an image, 1 positive anchor in "
        f"{stats['negatives_per_positive'] + 1:,.0f}, foreground fraction {stats['foreground_fraction']:.2e}")
    return stats


def best_lrs(lab: Lab, level: Level, optimizer: Optimizer) -> dict[str, float]:
    """Each loss's best grid lr once its grid is complete: the report's rule (cells.best_cells)."""
    cells = best_cells(cell_runs(lab, level, optimizer), lab.grids())
    return {loss: cells[key]["lr"] for loss in lab.losses
            if (key := (level.name, optimizer.name, loss)) in cells and cells[key]["complete"]}


def seed_variants(lab: Lab, level: Level, optimizer: Optimizer) -> list[Variant]:
    best = best_lrs(lab, level, optimizer)
    return [lab.variant(f"{loss}+lr{best[loss]!r}+seed{seed}") for loss in lab.losses if loss in best
            for seed in lab.seeds[1:]]


def planned_runs(lab: Lab, stage: str) -> list[tuple[Level, Optimizer, Variant]]:
    """The runs of a stage in order: optimizer by optimizer, level by level (the preset's order).

    Within a level: the recipe lr of every loss first, then the rest of the grid, then the best
    lrs at the other seeds, which are known only once the level's grid is complete.
    """
    runs = []
    for optimizer in lab.optimizers:
        for level in lab.levels:
            grid = sorted(lab.grid_variants(level, optimizer),
                          key=lambda v: not math.isclose(v.lr, optimizer.recipe_lr, rel_tol=1e-6))
            if stage in ("grid", "all"):
                runs += [(level, optimizer, v) for v in grid]
            if stage in ("seeds", "all"):
                runs += [(level, optimizer, v) for v in seed_variants(lab, level, optimizer)]
    return runs


def run_lab(lab: Lab, *, stage: str = "all", shard: tuple[int, int] | None = None, force: bool = False,
            report: bool = True, log: Callable[[str], None] = print) -> list[dict]:
    """Train the lab's unfinished runs of a stage (this shard's share), then write the report."""
    if stage not in STAGES:
        raise LabError(f"--stage must be one of {', '.join(STAGES)}, got {stage!r}")
    if shard is not None and stage == "all":  # seeds join the list mid-run: shards would shift onto each other's runs
        raise LabError("a lab's --shard needs --stage grid or --stage seeds (its seed runs are known only once "
                       "every grid is complete; --gpus runs the two stages in turn)")
    lab.out.mkdir(parents=True, exist_ok=True)
    _write_lab_json(lab)
    for level in lab.levels:
        measure_level(lab, level, log)
    attempted: set[tuple[str, str, str]] = set()
    while True:  # planned again after every run: a cell's seeds join the plan once its grid is complete
        runs = planned_runs(lab, stage)
        mine = runs if shard is None else runs[shard[0]::shard[1]]
        todo = [(lv, opt, v) for lv, opt, v in mine if (lv.name, opt.name, v.name) not in attempted]
        if not todo:
            break
        level, optimizer, variant = todo[0]
        attempted.add((level.name, optimizer.name, variant.name))
        study = lab.cell_study(level, optimizer)
        if (study.run_dir(variant) / "result.json").is_file() and not force:
            continue
        prepare_study(study, log)
        log(f"[lab] {level.name} / {optimizer.name} / {variant.name}: {study.max_steps} steps "
            f"({len(todo) - 1} more planned)")
        result = run_variant(study, variant, log)
        log(f"[lab] {level.name} / {optimizer.name} / {variant.name}: "
            + (f"diverged at step {result['diverged_step']}" if result["diverged"] else
               f"AP {result['AP']:.3f} (at {lab.settings['low_score_thresh']}: {result.get('AP_low', float('nan')):.3f})")
            + f", {result['minutes']:.1f} min")
        write_lab_report(lab, plots=False)
    return write_lab_report(lab, plots=report)


def _write_lab_json(lab: Lab) -> None:
    path = lab.out / "lab.json"
    commands = commands_with(path, lab.command)
    data = {"preset": str(lab.preset), "commands": commands, "study": lab.settings,
            "overrides": [f"--{k} {v}" for k, v in lab.overrides]}
    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")
    gitignore = lab.out / ".gitignore"
    if not gitignore.exists():
        write_atomic(gitignore, "# trained models and resume points: large, and remade by the lab\ncheckpoints/\n"
                                "*.ckpt\n")
