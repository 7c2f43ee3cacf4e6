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
belongs to one set of settings: rerunning into it with other settings is refused (detector.study.folder).

A variant whose loss turns non-finite (RetinaNetModule raises NonFiniteLossStop; run_cli returns
3) is a result: a "diverged" row with the step it happened at. Any other failure stops the study.
Several GPUs: detector.study.shards.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from .folder import check_same_settings, write_study_json
from .plan import Study
from .presets import StudyError
from .records import METRICS, code_version, final_losses, last_validation, write_atomic
from .report import write_report, write_tables
from .synthetic_data import prepare_data
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


def load_results(out: str | os.PathLike) -> list[dict[str, Any]]:
    """Every finished variant's result.json in an output folder."""
    results = []
    for path in sorted(Path(out).glob("runs/*/result.json")):
        try:
            results.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue  # being written by another shard: atomic replace makes this rare
    return results


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


__all__ = ["load_results", "prepare_study", "resume_point", "run_study", "run_variant", "variant_config_text"]
