"""The imbalance lab's tables, from the runs' result.json files (detector.study.lab).

- results.csv: one row per run (`lab_runs`: each result.json with its level, optimizer, lr, seed), RUN_COLUMNS.
- summary.md: the levels (measured ratios), then per level and optimizer each loss's best-of-grid
  lr with its AP at every seed and both score thresholds, the recipe-lr row beside it, and the
  gaps AP(focal) - AP(CE), AP(Sampling-Free) - AP(CE) with their seed range and a tie verdict
  (the rules: detector.study.lab_cells).
  Then the classification loss at the first step against its closed form (detector.study.first_step).
- `write_lab_report` writes both, and the figures (detector.study.lab_plots).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from .first_step import first_step_rows
from .lab_cells import GAPS, NOISE_FLOOR, THRESHOLDS, best_cells, gap, run_ap
from .lab_plots import write_lab_plots
from .records import read_rows, write_atomic
from .report import shown_path
from .runner import load_results
from .variants import parse_variant

RUN_COLUMNS: tuple[str, ...] = (
    "level", "ratio_anchor", "ratio_term", "optimizer", "lr", "loss", "seed", "AP", "AP_low", "AP50", "AP75",
    "AP50_low", "AP75_low", "low_score_thresh", "diverged", "diverged_step", "steps", "minutes", "variant",
)  # fmt: skip


def lab_runs(lab) -> list[dict]:
    """Every finished run of the lab's levels and optimizers, with its level, optimizer, lr and seed."""
    return [r for level in lab.levels for optimizer in lab.optimizers for r in cell_runs(lab, level, optimizer)]


def cell_runs(lab, level, optimizer) -> list[dict]:
    """The finished runs of one (level, optimizer), each with its level, optimizer, loss, lr and seed."""
    default_seed = int(lab.config.get("seed_everything") or 0)
    stats = lab.level_stats(level) or {}
    rows = []
    for r in load_results(lab.cell_dir(level, optimizer)):
        v = parse_variant(r["variant"])
        lr = v.lr if v.lr is not None else optimizer.recipe_lr
        rows.append({
            **r, "level": level.name, "optimizer": optimizer.name, "loss": v.base_name, "lr": lr,
            "seed": v.seed if v.seed is not None else default_seed,
            "ratio_anchor": stats.get("negatives_per_positive"),
            "ratio_term": stats.get("negative_terms_per_positive_term"),
            "steps_budget": level.max_steps, "recipe": math.isclose(lr, optimizer.recipe_lr, rel_tol=1e-6),
        })  # fmt: skip
    return rows


def runs_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RUN_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in sorted(rows, key=_run_order):
        writer.writerow({k: _csv_value(r.get(k)) for k in RUN_COLUMNS})
    return buf.getvalue()


def _run_order(r: dict) -> tuple:
    return (r["optimizer"], r.get("ratio_anchor") or 0, r["level"], r["loss"], r["lr"], r["seed"])


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else round(v, 6)
    return "" if v is None else v


def last_gain(val_csv: Path) -> float | None:
    """AP at the last validation minus AP at the one before (None with fewer than two)."""
    rows = sorted((int(r["step"]), r["AP"]) for r in read_rows(val_csv) if r.get("AP") not in (None, ""))
    return float(rows[-1][1]) - float(rows[-2][1]) if len(rows) >= 2 else None


def _f(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def summary_markdown(lab, rows: list[dict]) -> str:
    cells = best_cells(rows, lab.grids())
    out = ["# The imbalance lab: best-of-grid cells", ""]
    out += [f"Preset `{shown_path(lab.preset)}`; {len(rows)} finished runs (results.csv). "
            "Written by detector.study.lab_report.",
            "", "## Levels (measured with detector.study.anchor_stats on the val split)", "",
            "| level | objects / image | steps | positive anchors / image | neg : pos anchors | neg : pos sigmoid terms "
            "| foreground fraction (Sampling-Free's prior) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for level in lab.levels:
        st = lab.level_stats(level) or {}
        out.append(f"| {level.name} | {_f(st.get('boxes_per_image'), 2)} | {level.max_steps} | "
                   f"{_f(st.get('positives_per_image'), 1)} | 1 : {st.get('negatives_per_positive', float('nan')):,.0f} | "
                   f"1 : {st.get('negative_terms_per_positive_term', float('nan')):,.0f} | "
                   f"{st.get('foreground_fraction', float('nan')):.2e} |")
    out += ["", "Optimizers and their lr grids (base lr at a batch of 16, scaled linearly with the batch; the same "
            "grid for every loss):", ""]
    for o in lab.optimizers:
        own = "".join(f" (level {lv.name}: {', '.join(f'{lr:g}' for lr in lab.grid(lv, o))})" for lv in lab.levels
                      if lab.grid(lv, o) != o.lrs)
        out.append(f"- **{o.name}**: grid {', '.join(f'{lr:g}' for lr in o.lrs)}{own}; recipe lr {o.recipe_lr:g}; "
                   f"settings {o.model}")
    out += ["", "## Best-of-grid cells", "",
            "Best lr chosen on the first seed's AP (score ≥ 0.05); the other seeds rerun that lr. AP at 0.001 is "
            "the same model's detections down to score 0.001. `edge`: the best lr is at an end of the grid. The "
            "recipe row is the recipe lr at the first seed. Last-interval gain: the first seed's AP at the end minus "
            "its AP at the validation before (how flat the curve is at the end).", "",
            "| level | optimizer | loss | best lr | AP per seed (≥ 0.05) | AP per seed (≥ 0.001) | mean AP | "
            "recipe-lr AP (≥ 0.05 / ≥ 0.001) | last-interval AP gain | grid complete |",
            "|---|---|---|---:|---|---|---:|---|---:|---|"]
    order = {lv.name: i for i, lv in enumerate(lab.levels)}
    for key in sorted(cells, key=lambda k: (k[1], order.get(k[0], 99), lab.losses.index(k[2]) if k[2] in lab.losses else 99)):
        c = cells[key]
        seeds = sorted(c["by_seed"])
        hi = ", ".join(f"s{s} {_f(run_ap(c['by_seed'][s]))}" for s in seeds)
        lo = ", ".join(f"s{s} {_f(run_ap(c['by_seed'][s], 'AP_low'))}" for s in seeds)
        mean = np.mean([run_ap(c["by_seed"][s]) for s in seeds])
        rec = c["recipe"]
        recipe = "–" if rec is None else f"{_f(run_ap(rec))} / {_f(run_ap(rec, 'AP_low'))}"
        level = next(lv for lv in lab.levels if lv.name == key[0])
        optimizer = next(o for o in lab.optimizers if o.name == key[1])
        rise = last_gain(lab.cell_dir(level, optimizer) / "runs" / c["by_seed"][min(seeds)]["variant"] / "val.csv")
        out.append(f"| {key[0]} | {key[1]} | {key[2]} | {c['lr']:g}{' (edge)' if c['edge'] else ''} | {hi} | {lo} | "
                   f"{mean:.3f} | {recipe} | {'–' if rise is None else f'{rise:+.3f}'} | "
                   f"{'yes' if c['complete'] else 'no'} |")
    out += ["", "## Gaps", "",
            "AP(loss) − AP(CE with π = 0.01) of the best cells, per seed; a gap no larger than the seed spread (the "
            "larger AP range of the two losses over the seeds) is a tie. When both cells' mean AP is below "
            f"{NOISE_FLOOR:g}, neither left the noise floor and the verdict says so, whatever the gap's sign.", "",
            "| level | neg : pos anchors | optimizer | comparison | threshold | gap per seed | mean | seed spread | "
            "verdict |", "|---|---:|---|---|---|---|---:|---:|---|"]
    for optimizer in lab.optimizers:
        for level in lab.levels:
            st = lab.level_stats(level) or {}
            for loss, against, label in GAPS:
                for key, tlabel in THRESHOLDS:
                    g = gap(cells, level.name, optimizer.name, loss, against, key)
                    if g is None:
                        continue
                    per_seed = ", ".join(f"s{s} {v:+.3f}" for s, v in g["per_seed"].items())
                    out.append(f"| {level.name} | 1 : {st.get('negatives_per_positive', float('nan')):,.0f} | "
                               f"{optimizer.name} | {label} | {tlabel} | {per_seed} | {g['mean']:+.3f} | "
                               f"{_f(g['spread'])} | {g['verdict']} |")
    out += _first_step_section(lab, rows)
    return "\n".join(out) + "\n"


def _first_step_section(lab, rows: list[dict]) -> list[str]:
    def three(values, fmt) -> str:
        return " / ".join("–" if x is None else fmt(x) for x in values)

    out = ["", "## The classification loss at the first step", "",
           "Per positive anchor, before the first update. Closed form: every output at the prior p = π, one "
           "positive term α (1 − p)^γ · −log p and (neg : pos sigmoid terms) negative terms (1 − α) p^γ · −log(1 − p) "
           "each (detector.study.first_step), at the level's mean ratio and at the first batch's own; Sampling-Free "
           "has no fixed prior and scales its loss to the box loss. Measured: loss_cls and neg_loss_share in the "
           "first row of the loss's recipe-lr run's train.csv (one batch).", "",
           "| level | loss | neg : pos sigmoid terms: level / first batch | loss: closed form at the level's / at "
           "the batch's / measured | negatives' share: the same three |", "|---|---|---:|---:|---:|"]
    for r in first_step_rows(lab, rows):
        closed, batch, measured = r["closed"] or (None, None), r["closed_batch"] or (None, None), r["measured"] or {}
        ratios = three((r["ratio_term"], r["batch_ratio_term"]), lambda x: f"1 : {x:,.0f}")
        loss = three((closed[0], batch[0], measured.get("loss_cls")), lambda x: f"{x:.3g}")
        share = three((closed[1], batch[1], measured.get("neg_loss_share")), lambda x: f"{100 * x:.2g} %")
        out.append(f"| {r['level']} | {r['loss']} | {ratios} | {loss} | {share} |")
    return out


def write_lab_report(lab, plots: bool = True) -> list[dict]:
    """results.csv and summary.md (and, with plots, every figure); returns the runs."""
    rows = lab_runs(lab)
    write_atomic(lab.out / "results.csv", runs_csv(rows))
    write_atomic(lab.out / "summary.md", summary_markdown(lab, rows))
    if plots:
        write_lab_plots(lab, rows)
    return rows


__all__ = ["RUN_COLUMNS", "cell_runs", "lab_runs", "last_gain", "runs_csv", "summary_markdown", "write_lab_report"]
