"""The tables, from the run records; the figures beside them (detector.study.plots).

A loss study: results.csv and results.md, one row per variant (RESULT_COLUMNS). The imbalance lab:
results.csv, one row per run (RUN_COLUMNS), and summary.md: the levels' measured imbalance, each loss's
best-of-grid cell at every seed and both score thresholds beside its recipe-lr run, the gaps with their tie
verdicts (detector.study.cells), and the first step's loss against its closed form (detector.study.first_step).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..io import write_atomic
from .cells import GAPS, NOISE_FLOOR, THRESHOLDS, best_cells, gap, run_ap
from .first_step import first_step_rows
from .plan import PRESET_DIR
from .plots import PLOT_TITLES, write_lab_plots, write_plots
from .records import FINAL_LOSS_WINDOW, METRICS, csv_text, load_results, load_stats, read_rows, recorded_commands
from .variants import split_name


RESULT_COLUMNS: tuple[str, ...] = (
    "variant", "loss", "gamma", "alpha", "prior_init", "AP", "AP50", "AP75", "APs", "APm", "APl",
    "final_loss_cls", "final_loss_box", "diverged", "diverged_step", "minutes",
)  # fmt: skip

def _order(r: dict) -> tuple:
    """CE without the prior init, CE, alpha-balanced CE by alpha, focal by gamma then alpha, the others; labelled
    rows after their loss."""
    loss, alpha = r.get("loss"), r.get("alpha")
    rank = (1 if r.get("prior_init") else 0) if loss == "ce" and alpha is None else 2 if loss == "ce" else (
        3 if loss == "focal" else 4)
    return (rank, r.get("gamma") or 0.0, -1.0 if alpha is None else alpha, r["variant"].count("+"), r["variant"])


def _cell(column: str, value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if column in ("gamma", "alpha"):
        return f"{float(value):g}"
    if column in ("diverged_step",):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def results_csv(results: list[dict]) -> str:
    return csv_text(RESULT_COLUMNS, sorted(results, key=_order), lambda c, v: _cell(c, v, 4 if c in METRICS or
                                                                           c.startswith("final") else 2))


def results_markdown(results: list[dict], study=None, stats: dict[str, dict] | None = None) -> str:
    rows = sorted(results, key=_order)
    lines = ["# Loss study results", ""]
    if study is not None:
        s = study.settings
        lines += [
            f"Preset `{shown_path(study.preset)}`: {s['max_steps']} training steps per variant, validation every "
            f"{study.val_interval} steps; every variant shares the seed, data, schedule and model, and differs "
            "only in its classification loss and classifier bias init.",
            "",
        ]
        commands = recorded_commands(study.out / "study.json")
        if commands:
            lines += ["Made with (from the repository root):", "", "```", *commands, "```", ""]
        if study.overrides:
            lines += ["Overrides for the whole study: " + ", ".join(f"`--{k} {v}`" for k, v in study.overrides), ""]
    lines += [
        "AP columns: pycocotools, 0-1 scale, on the validation split at the end of training. "
        f"final_loss_cls / final_loss_box: mean of the last {FINAL_LOSS_WINDOW} training steps. diverged: the loss turned "
        "non-finite at diverged_step (0-based), and training stopped there. minutes: wall time of the variant "
        "(training, validations, statistics).",
        "",
        "| " + " | ".join(RESULT_COLUMNS) + " |",
        "|" + "|".join("---" if c in ("variant", "loss") else "---:" for c in RESULT_COLUMNS) + "|",
    ]
    for r in rows:
        cells = [_cell(c, r.get(c), 3 if c in METRICS else 4 if c.startswith("final") else 1) for c in RESULT_COLUMNS]
        if r.get("diverged"):
            cells = [cell if cell else "—" for cell in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Against the paper's Table 1", "",
              "The paper's AP is COCO minival AP (percent) of a ResNet-50-FPN at 600 px after 90k iterations; "
              "compare the ranking, not the numbers.", "",
              "| variant | AP here | paper AP (%) |", "|---|---:|---:|"]
    for r in rows:
        paper = r.get("paper_ap")
        here = "diverged" if r.get("diverged") else _cell("AP", r.get("AP"), 3)
        lines.append(f"| {r['variant']} | {here} | {'' if paper is None else f'{paper:.1f}'} |")
    if stats:
        lines += ["", "## Where the classification loss sits at the end of training", "",
                  "On the first validation images, each variant's own training loss (gamma = its own; CE and OHEM: "
                  "0), per anchor: the share of the negatives' total loss carried by the hardest 1 % and 10 % of "
                  "the background anchors; background anchors per image scoring at least 0.05 (the inference "
                  "threshold); the median true-class score of the positive anchors.", "",
                  "| variant | gamma | negatives' loss in hardest 1 % | in hardest 10 % | background >= 0.05 per image "
                  "| median positive score |", "|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            st = stats.get(r["variant"])
            if not st:
                continue
            g = f"{st['own_gamma']:g}"
            top = st["top_share"]["negative"][g]
            lines.append(f"| {r['variant']} | {g} | {_pct(top['0.01'])} | {_pct(top['0.1'])} | "
                         f"{st['background_above_inference_score_per_image']} | "
                         f"{_cell('AP', st.get('positive_score_median'), 3)} |")
    lines += ["", "## Plots", ""]
    for name, title in PLOT_TITLES.items():
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _pct(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * float(value):.1f} %"


def shown_path(path: Path) -> str:
    """The path relative to the repository root, else to the working directory, when it lies under one (tables
    and records name no home folders or checkouts)."""
    resolved = Path(path).resolve()
    for root in (PRESET_DIR.parents[1], Path.cwd()):
        if resolved.is_relative_to(root.resolve()):
            return str(resolved.relative_to(root.resolve()))
    return str(path)


def write_report(study, plots: bool = True) -> list[dict]:
    """results.csv, results.md and (with plots) every figure of detector.study.plots in study.out; returns the
    results."""
    results = sorted(load_results(study.out), key=_order)
    stats = load_stats(results)
    write_atomic(study.out / "results.csv", results_csv(results))
    write_atomic(study.out / "results.md", results_markdown(results, study, stats))
    if plots:
        write_plots(study.out, results, stats)
    return results


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
        base, mods = split_name(r["variant"])
        lr = mods.get("lr", optimizer.recipe_lr)
        rows.append({
            **r, "level": level.name, "optimizer": optimizer.name, "loss": base, "lr": lr,
            "seed": mods.get("seed", default_seed),
            "ratio_anchor": stats.get("negatives_per_positive"),
            "ratio_term": stats.get("negative_terms_per_positive_term"),
            "recipe": math.isclose(lr, optimizer.recipe_lr, rel_tol=1e-6),
        })  # fmt: skip
    return rows


def runs_csv(rows: list[dict]) -> str:
    def value(column: str, v: Any) -> Any:
        return ("" if math.isnan(v) else round(v, 6)) if isinstance(v, float) else "" if v is None else v

    order = lambda r: (r["optimizer"], r.get("ratio_anchor") or 0, r["level"], r["loss"], r["lr"], r["seed"])  # noqa: E731
    return csv_text(RUN_COLUMNS, sorted(rows, key=order), value)


#: A curve whose last third adds less AP than this counts as a plateau.
PLATEAU_GAIN = 0.005


def ap_gain(val_csv: Path, over: float | None = None) -> float | None:
    """AP at the last validation minus AP at the one before; with `over`, minus AP `over` of the steps before
    the end (linear between the validations around that step). None without enough curve to say."""
    rows = sorted((int(r["step"]), float(r["AP"])) for r in read_rows(val_csv) if r.get("AP") not in (None, ""))
    if len(rows) < 2:
        return None
    steps, aps = zip(*rows)
    if over is None:
        return aps[-1] - aps[-2]
    at = (1 - over) * steps[-1]
    return None if at < steps[0] else aps[-1] - float(np.interp(at, steps, aps))


def _f(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _signed(v: float | None) -> str:
    return "–" if v is None else f"{v:+.3f}"


def summary_markdown(lab, rows: list[dict]) -> str:
    cells = best_cells(rows, lab.grids())
    out = ["# The imbalance lab: best-of-grid cells", ""]
    out += [f"Preset `{shown_path(lab.preset)}`; {len(rows)} finished runs (results.csv). "
            "Written by detector.study.report.",
            "", "## Levels (measured with detector.check_data.anchor_statistics on the val split)", "",
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
            "its AP at the validation before (how flat the curve is at the end). Last-third gain, per seed: AP at "
            "the end minus AP at two thirds of the steps (linear between the validations around it); a curve "
            f"whose last third adds less than {PLATEAU_GAIN:g} is at a plateau.", "",
            "| level | optimizer | loss | best lr | AP per seed (≥ 0.05) | AP per seed (≥ 0.001) | mean AP | "
            "recipe-lr AP (≥ 0.05 / ≥ 0.001) | last-interval AP gain | last-third AP gain per seed | grid complete |",
            "|---|---|---|---:|---|---|---:|---|---:|---|---|"]
    order = {lv.name: i for i, lv in enumerate(lab.levels)}
    for key in sorted(cells, key=lambda k: (k[1], order.get(k[0], 99), lab.losses.index(k[2]) if k[2] in lab.losses else 99)):
        c = cells[key]
        seeds = sorted(c["by_seed"])
        hi = ", ".join(f"s{s} {_f(run_ap(c['by_seed'][s]))}" for s in seeds)
        lo = ", ".join(f"s{s} {_f(run_ap(c['by_seed'][s], 'AP_low'))}" for s in seeds)
        mean = np.mean([run_ap(c["by_seed"][s]) for s in seeds])
        rec = c["recipe"]
        recipe = "–" if rec is None else f"{_f(run_ap(rec))} / {_f(run_ap(rec, 'AP_low'))}"
        rise = ap_gain(c["run"]["folder"] / "val.csv")
        third = ", ".join(f"s{s} {_signed(ap_gain(c['by_seed'][s]['folder'] / 'val.csv', over=1 / 3))}" for s in seeds)
        out.append(f"| {key[0]} | {key[1]} | {key[2]} | {c['lr']:g}{' (edge)' if c['edge'] else ''} | {hi} | {lo} | "
                   f"{mean:.3f} | {recipe} | {_signed(rise)} | {third} | {'yes' if c['complete'] else 'no'} |")
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
