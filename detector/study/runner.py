"""The runs of a study (or of the imbalance lab's cells), one after another through the project's LightningCLI.

Each variant's complete training config (Study.variant_config) goes to OUT/runs/<variant>/config.yaml and
trains with `detector.cli.run_cli(["fit", "--config", that file])`, the code path of scripts/train.py.
Lightning's CSVLogger writes every step's logged values (runs/<variant>/csv/version_<k>/metrics.csv, one
version per process); after `fit` the runner validates the last step with `trainer.validate` when the
schedule did not end on a validation, splits the log into the run's record, train.csv (TRAIN_KEYS by step)
and val.csv (the 12 COCO numbers by step), writes stats.json (detector.study.stats) and the trained model
(OUT/checkpoints/<variant>/final.pt), then result.json, the run's row of the table, written last: done.

A rerun skips every variant with its result.json and resumes the one that was training from its last.ckpt
(after every validation) when its config.yaml is unchanged; else it starts again from step 0. A non-finite
loss (run_cli's exit status 3) is a result: a "diverged" row. Any other failure stops the study. A folder
holds one set of settings (OUT/study.json, `check_same_settings`). `launch_shards` runs one process per
GPU, shard k training runs k, k + n, ...; the lab's stages (grid, seeds, all) are planned in `planned_runs`.
"""

from __future__ import annotations

import csv
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

from ..io import write_atomic
from .cells import best_cells
from .plan import Lab, LabError, Level, Optimizer, Study, StudyError
from .records import METRICS, code_version, csv_text, final_losses, load_results, read_rows, recorded_commands
from .report import cell_runs, shown_path, write_lab_report, write_report
from .variants import Variant

#: train.csv's columns and the logged keys they hold.
TRAIN_KEYS: dict[str, str] = {
    "loss": "train/loss", "loss_cls": "train/loss_cls", "loss_box": "train/loss_box", "lr": "train/lr",
    "positives": "train/imbalance/positives", "negatives": "train/imbalance/negatives",
    "ignored": "train/imbalance/ignored", "neg_loss_share": "train/imbalance/neg_loss_share",
    "easy_neg_loss_share": "train/imbalance/easy_neg_loss_share",
}  # fmt: skip


def variant_config_text(study: Study, variant: Variant) -> str:
    """runs/<variant>/config.yaml's text; a resume compares it with the file on disk byte for byte."""
    config_path = study.run_dir(variant) / "config.yaml"
    header = (f"# Variant {variant.name} of the loss study in {study.out} (preset {shown_path(study.preset)}).\n"
              f"# Written by detector.study.runner; train it alone with:\n"
              f"#   python scripts/train.py fit --config {config_path}\n")
    return header + yaml.safe_dump(study.variant_config(variant), sort_keys=False)


def run_variant(study: Study, variant: Variant, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train one variant through run_cli, write its record and result.json; returns the result."""
    from ..cli import run_cli

    run_dir, text = study.run_dir(variant), variant_config_text(study, variant)
    args = ["fit", "--config", str(run_dir / "config.yaml")]
    resume = resume_point(study, variant, text)
    if resume is None:
        for stale in (run_dir, study.out / "tb" / variant.name, study.out / "checkpoints" / variant.name):
            shutil.rmtree(stale, ignore_errors=True)  # a partial run of an earlier, killed study
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(text, encoding="utf-8")
    else:
        log(f"[study] {variant.name}: resuming from {resume}")
        args += ["--ckpt_path", str(resume)]
    trainers: list = []
    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI reads only `args` here, not the study's options
    try:
        rc = run_cli(args, trainers)
    finally:
        sys.argv = argv
    if rc not in (0, 3) or not trainers:
        raise StudyError(f"variant {variant.name} failed (exit status {rc}) without a non-finite loss; "
                         "see the messages above")
    trainer = trainers[-1]
    result: dict[str, Any] = {**variant.row(), **{k: None for k in METRICS}}
    if rc == 3:
        write_records(run_dir)
        step = trainer.global_step
        result.update({"final_loss_cls": None, "final_loss_box": None, "diverged": True, "diverged_step": step,
                       "steps": step, "message": f"step {step}: a loss part or the gradient turned non-finite"})
    else:
        result.update(finish(study, variant, trainer))
    from lightning.pytorch.callbacks import Timer

    seconds = next(c for c in trainer.callbacks if isinstance(c, Timer)).time_elapsed("train")
    result.update({"minutes": round((seconds + result.pop("seconds_after", 0.0)) / 60, 2), "clip": variant.clip,
                   "lr": variant.lr, "seed": variant.seed, "paper_ap": variant.paper_ap(),
                   "fingerprint": study.fingerprint, **code_version()})
    write_atomic(run_dir / "result.json", json.dumps(result, indent=2) + "\n")
    for done in ("checkpoints", "csv"):  # the resume point and the raw log are no longer needed
        shutil.rmtree(run_dir / done, ignore_errors=True)
    return result


def finish(study: Study, variant: Variant, trainer) -> dict[str, Any]:
    """After a finished `fit`: the last validation, the record, stats.json, the model; the result's numbers."""
    from torch.utils.data import Subset

    from ..checkpoint import save_detector
    from .stats import loss_statistics

    start, run_dir = time.perf_counter(), study.run_dir(variant)
    module, data, step = trainer.lightning_module, trainer.datamodule, trainer.global_step
    val = write_records(run_dir)[1]
    if not val or val[-1]["step"] != step:  # the schedule did not end on a validation
        val = write_records(run_dir, final={"step": step, **_rounded(_validate(trainer))})[1]
    out = {k: val[-1][k] for k in METRICS} | final_losses(run_dir)
    out.update({"diverged": False, "diverged_step": None, "steps": step})
    if study.settings.get("low_score_thresh") is not None:
        low = float(study.settings["low_score_thresh"])
        metrics = _rounded(_validate(trainer, score_thresh=low))
        out.update({f"{k}_low": metrics[k] for k in ("AP", "AP50", "AP75")} | {"low_score_thresh": low})
    module.to(trainer.strategy.root_device)
    d, val_set = module.detector_config, data.eval_dataset("val")
    subset = Subset(val_set, range(min(int(study.settings["stats_images"]), len(val_set))))
    own_gamma = d.gamma if d.cls_loss == "focal" else 0.0
    stats = loss_statistics(module.model, data.eval_dataloader(subset), own_gamma=own_gamma,
                            gammas=tuple(float(g) for g in study.settings["gammas"]))
    write_atomic(run_dir / "stats.json", json.dumps(stats) + "\n")
    if study.settings["save_models"]:
        save_detector(module.model, study.out / "checkpoints" / variant.name / "final.pt",
                      class_names=data.class_names, label_to_category_id=data.label_to_category_id)
    return out | {"seconds_after": time.perf_counter() - start}


def _validate(trainer, score_thresh: float | None = None) -> dict:
    """`trainer.validate` of the fitted module (at this score threshold), its COCO numbers; not logged (Lightning
    logs fit's validations at the step before, this one at the step)."""
    module = trainer.lightning_module
    postprocessor, loggers = module.model.postprocessor, trainer.loggers
    default, trainer.loggers = postprocessor.score_thresh, []
    postprocessor.score_thresh = default if score_thresh is None else score_thresh
    try:
        trainer.validate(module, datamodule=trainer.datamodule, verbose=False)
    finally:
        postprocessor.score_thresh, trainer.loggers = default, loggers
    return module.last_metrics


def _rounded(metrics: dict) -> dict:
    from ..evaluation import COCO_METRIC_NAMES, is_no_gt

    return {k: None if is_no_gt(metrics[k]) else round(float(metrics[k]), 6) for k in COCO_METRIC_NAMES}


def write_records(run_dir: Path, final: dict | None = None) -> tuple[list[dict], list[dict]]:
    """train.csv and val.csv (and `final`, a last validation's row) from the CSVLogger's metrics.csv of every
    process that trained the run, a resumed step replacing the killed run's; returns their rows.

    Lightning logs a step's values under the number of steps before it: the record numbers them from 1.
    """
    from ..evaluation import COCO_METRIC_NAMES

    logs = sorted(run_dir.glob("csv/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    rows = [{**r, "step": int(r["step"]) + 1} for path in logs for r in read_rows(path)]
    train = {r["step"]: {"step": r["step"], **{k: r.get(key, "") for k, key in TRAIN_KEYS.items()}}
             for r in rows if r.get("train/loss")}
    val = {r["step"]: {"step": r["step"], **_rounded({k: float(r.get(f"val/{k}") or -1) for k in COCO_METRIC_NAMES})}
           for r in rows if r.get("val/AP")} | ({final["step"]: final} if final else {})
    records = [train[s] for s in sorted(train)], [val[s] for s in sorted(val)]
    for name, table, columns in (("train.csv", records[0], TRAIN_KEYS), ("val.csv", records[1], COCO_METRIC_NAMES)):
        write_atomic(run_dir / name, csv_text(["step", *columns], table, lineterminator="\r\n"))
    return records


def resume_point(study: Study, variant: Variant, config_text: str) -> Path | None:
    """The last.ckpt of this variant's interrupted run, when its config.yaml is the one this study writes."""
    run_dir = study.run_dir(variant)
    last, config = run_dir / "checkpoints" / "last.ckpt", run_dir / "config.yaml"
    interrupted = last.is_file() and not (run_dir / "result.json").exists()
    return last if interrupted and config.is_file() and config.read_text(encoding="utf-8") == config_text else None


def prepare_study(study: Study, log: Callable[[str], None] = print) -> None:
    """Ready study.out to train into: the folder, its settings checked and recorded, the synthetic data made."""
    study.out.mkdir(parents=True, exist_ok=True)
    check_same_settings(study)
    write_study_json(study)
    prepare_data(study.config["data"], study.settings.get("synthetic"), log)


def write_study_json(study: Study) -> None:
    """OUT/study.json: the shared settings, their fingerprint, and every command that trained here."""
    write_record_json(study.out / "study.json", study.command, {
        "preset": shown_path(study.preset), "fingerprint": study.fingerprint, "variants": study.settings["variants"],
        "overrides": [f"--{k} {v}" for k, v in study.overrides], "shared": _jsonable(study.shared())})


def _jsonable(data: Any) -> Any:
    return json.loads(json.dumps(data, default=str))


def write_record_json(path: Path, command: list[str], data: dict) -> None:
    """study.json / lab.json: the settings and every command that trained into the folder (a shard child
    adds none: its parent records the command); a .gitignore that keeps the models and checkpoints out."""
    commands = recorded_commands(path)
    text = " ".join(shlex.quote(c) for c in command)
    if text and (not commands or commands[-1] != text) and not is_shard_child():
        commands.append(text)
    record = {"preset": data["preset"], "commands": commands, **data}  # the committed files' key order
    write_atomic(path, json.dumps(record, indent=2, default=str) + "\n")
    if not (path.parent / ".gitignore").exists():
        write_atomic(path.parent / ".gitignore", "# trained models and resume points: large, and remade by the "
                                                 "study\ncheckpoints/\n*.ckpt\n")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    return {k: v for key, value in d.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}


def check_same_settings(study: Study) -> None:
    """Refuse an output folder that holds results made with other shared settings."""
    try:
        stored = json.loads((study.out / "study.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return
    if stored.get("fingerprint") == study.fingerprint:
        return
    old, new = _flatten(stored.get("shared", {})), _flatten(_jsonable(study.shared()))
    diffs = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    shown = "; ".join(diffs[:4]) or "fingerprint differs"
    raise StudyError(f"{study.out} holds a study made with other settings ({shown}); choose another --out, or "
                     "delete that folder")


_SHARD_CHILD = "DETECTOR_STUDY_SHARD_CHILD"


def is_shard_child() -> bool:
    """Whether this process is a shard that launch_shards started."""
    return bool(os.environ.get(_SHARD_CHILD))


def launch_shards(script: str, argv: list[str], gpus: list[str], out: Path, log: Callable[[str], None] = print) -> int:
    """`script argv --shard k/n --no-report` once per GPU (CUDA_VISIBLE_DEVICES), in parallel, each appending to
    OUT/logs/shard<k>.log; returns the worst exit status."""
    (out / "logs").mkdir(parents=True, exist_ok=True)
    procs = []
    for k, gpu in enumerate(gpus):
        log_path = out / "logs" / f"shard{k}.log"
        cmd = [sys.executable, script, *argv, "--shard", f"{k}/{len(gpus)}", "--no-report"]
        log(f"[study] shard {k}/{len(gpus)} on GPU {gpu}: log {log_path}")
        procs.append(subprocess.Popen(cmd, env={**os.environ, "CUDA_VISIBLE_DEVICES": gpu, _SHARD_CHILD: "1"},
                                      stdout=log_path.open("a"), stderr=subprocess.STDOUT))
    return max(p.wait() for p in procs)


def prepare_data(data: dict, knobs: dict | None, log: Callable[[str], None] = print) -> None:
    """The synthetic data of a config's `data` section with make_synthetic's `knobs` (study.synthetic), made
    once; a folder that holds some must have been made with the same knobs (its train.json records them)."""
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
    made = {**info.get("spec", {}), "seed": info.get("seed")}
    diffs = [f"{k} {made.get(k)!r} (wanted {v!r})" for k, v in knobs.items()
             if k not in ("num_train", "num_val") and made.get(k) != v]
    if diffs:
        raise StudyError(f"{root} holds synthetic data made with other settings: {', '.join(diffs)}; "
                         "delete it, or point data.root elsewhere")


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


def _train(plan: Callable[[], list[tuple[Study, Variant, str]]], shard: tuple[int, int] | None, force: bool,
           after_each: Callable[[Study], None], log: Callable[[str], None]) -> None:
    """Train the unfinished runs of `plan()` (this shard's share), planned again after every run."""
    attempted: set[tuple[Path, str]] = set()
    while True:
        runs = plan()
        mine = runs if shard is None else runs[shard[0]::shard[1]]
        todo = [(s, v, label) for s, v, label in mine if (s.out, v.name) not in attempted]
        if not todo:
            return
        study, variant, label = todo[0]
        attempted.add((study.out, variant.name))
        done = study.run_dir(variant) / "result.json"
        if done.is_file() and not force:
            previous = json.loads(done.read_text(encoding="utf-8"))
            log(f"{label}: finished before, skipped "
                f"({'diverged' if previous.get('diverged') else 'AP ' + _fmt(previous.get('AP'))})")
            continue
        prepare_study(study, log)
        log(f"{label}: training {study.max_steps} steps, validating every {study.val_interval} "
            f"({len(todo) - 1} more planned)")
        r = run_variant(study, variant, log)
        log(f"{label}: " + (f"diverged at step {r['diverged_step']}" if r["diverged"] else
                            f"AP {_fmt(r['AP'])} AP50 {_fmt(r['AP50'])} (at score >= 0.001: {_fmt(r.get('AP_low'))})")
            + f", {r['minutes']:.1f} min")
        after_each(study)


def run_study(study: Study, variants: list[Variant], *, shard: tuple[int, int] | None = None, force: bool = False,
              report: bool = True, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train the variants not yet finished in study.out (this shard's share), then report; every result."""
    prepare_study(study, log)
    n = len(variants) if shard is None else len(variants[shard[0]::shard[1]])
    _train(lambda: [(study, v, f"[study] {v.name}") for v in variants], shard, force,
           lambda s: write_report(s, plots=False), log)
    results = write_report(study, plots=report)
    if report:
        log(f"[study] table: {study.out / 'results.md'}; plots: {study.out}/*.png ({n} variants here)")
    return results


STAGES = ("grid", "seeds", "all")


def measure_level(lab: Lab, level: Level, log: Callable[[str], None] = print) -> dict:
    """The level's anchor statistics (cached in OUT/levels/<level>.json with the data's knobs)."""
    from ..check_data import anchor_statistics

    stats = lab.level_stats(level)
    if stats is not None and stats.get("synthetic") == level.synthetic:
        return stats
    folder = lab.out / "levels"
    prepare_data(lab.level_config(level)["data"], level.synthetic, log)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / f"{level.name}.yaml", yaml.safe_dump(lab.level_config(level), sort_keys=False))
    log(f"[lab] level {level.name}: counting positive and negative anchors of the val split")
    stats = {**anchor_statistics(folder / f"{level.name}.yaml", progress=False), "level": level.name,
             "synthetic": level.synthetic}
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
    """A stage's runs, optimizer by optimizer, level by level: the recipe lr of every loss first, then the rest
    of the grid, then the best lrs at the other seeds (known once the level's grid is complete)."""
    runs = []
    for optimizer in lab.optimizers:
        for level in lab.levels:
            grid = sorted(lab.grid_variants(level, optimizer),
                          key=lambda v: not math.isclose(v.lr, optimizer.recipe_lr, rel_tol=1e-6))
            runs += [(level, optimizer, v) for v in (grid if stage in ("grid", "all") else [])
                     + (seed_variants(lab, level, optimizer) if stage in ("seeds", "all") else [])]
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
    write_record_json(lab.out / "lab.json", lab.command, {
        "preset": shown_path(lab.preset), "study": lab.settings, "overrides": [f"--{k} {v}" for k, v in lab.overrides]})
    for level in lab.levels:
        measure_level(lab, level, log)
    _train(lambda: [(lab.cell_study(lv, o), v, f"[lab] {lv.name} / {o.name} / {v.name}")
                    for lv, o, v in planned_runs(lab, stage)], shard, force,
           lambda s: write_lab_report(lab, plots=False), log)
    return write_lab_report(lab, plots=report)
