"""Running the imbalance lab (detector.study.lab): its levels measured, its runs planned and trained.

Stages: `grid` trains every (loss, lr) at the first seed; `seeds` trains each loss's best-of-grid
lr at the other seeds once its grid is complete; `all` does both. Finished runs are skipped and
a killed run resumes from its last checkpoint (the runner's rules), so the lab can be run in parts:
a level, an optimizer or a shard (`i/n` of one stage's ordered run list) at a time. Shards split
one stage at a time because within a stage the list is fixed; nothing else keeps two processes
off the same run. Each run is a variant of its (level, optimizer) cell's loss study, trained by
detector.study.runner.run_variant.
"""

from __future__ import annotations

import json
import math
from typing import Callable

import yaml

from .folder import commands_with
from .lab import Lab, LabError, Level, Optimizer, fmt_lr
from .lab_cells import best_cells
from .lab_report import cell_runs, write_lab_report
from .plan import Study
from .records import write_atomic
from .runner import prepare_study, run_variant
from .synthetic_data import prepare_data
from .variants import Variant, parse_variant

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
    """Each loss's best grid lr once its grid is complete: the report's rule (lab_cells.best_cells)."""
    cells = best_cells(cell_runs(lab, level, optimizer), lab.grids())
    return {loss: cells[key]["lr"] for loss in lab.losses
            if (key := (level.name, optimizer.name, loss)) in cells and cells[key]["complete"]}


def seed_variants(lab: Lab, level: Level, optimizer: Optimizer) -> list[Variant]:
    best = best_lrs(lab, level, optimizer)
    return [parse_variant(f"{loss}+lr{fmt_lr(best[loss])}+seed{seed}") for loss in lab.losses if loss in best
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


__all__ = ["STAGES", "best_lrs", "measure_level", "planned_runs", "run_lab", "seed_variants"]
