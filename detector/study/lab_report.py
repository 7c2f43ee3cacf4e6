"""The imbalance lab's tables and figures, from the runs' result.json files (detector.study.lab).

- results.csv: one row per run (`lab_runs`: each result.json with its level, optimizer, lr, seed), RUN_COLUMNS.
- summary.md: the levels (measured ratios), then per level and optimizer each loss's best-of-grid
  lr with its AP at every seed and both score thresholds, the recipe-lr row beside it, and the
  gaps AP(focal) - AP(CE), AP(Sampling-Free) - AP(CE) with their seed range and a tie verdict.
- gap_vs_imbalance.png: those gaps against the measured anchor-level ratio (log axis), one line
  per optimizer and comparison, error bars from the per-seed gaps; one panel per score threshold.
- ap_over_steps_best.png: validation AP over the steps of the best-of-grid cells (first seed).
- In each <level>_<optimizer>/ folder: the loss study's ap_over_steps.png, loss_cdf.png (the
  paper's Figure 4, from the best focal cell) and background_scores.png of the best cells.

A gap is a *tie* when its size is not larger than the seed spread: the larger of the two losses'
AP ranges over the seeds (max - min). With one seed there is no spread, and the verdict says so.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from .plots import plot_ap_over_steps, plot_background_scores, plot_loss_cdf, save_figure, variant_colors
from .records import load_stats, read_columns, read_rows, write_atomic
from .runner import load_results
from .variants import parse_variant

RUN_COLUMNS: tuple[str, ...] = (
    "level", "ratio_anchor", "ratio_term", "optimizer", "lr", "loss", "seed", "AP", "AP_low", "AP50", "AP75",
    "AP50_low", "AP75_low", "low_score_thresh", "diverged", "diverged_step", "steps", "minutes", "variant",
)  # fmt: skip
#: The comparisons of the gap figure: (loss, against), by their study names.
FOCAL, CE, SAMPLING_FREE = "focal_g2_a0.25", "ce_prior", "sampling_free"
GAPS: tuple[tuple[str, str, str], ...] = ((FOCAL, CE, "focal − CE"), (SAMPLING_FREE, CE, "Sampling-Free − CE"))
THRESHOLDS = (("AP", "score ≥ 0.05"), ("AP_low", "score ≥ 0.001"))


def lab_runs(lab) -> list[dict]:
    """Every finished run of the lab's levels and optimizers, with its level, optimizer, lr and seed."""
    rows = []
    default_seed = int(lab.config.get("seed_everything") or 0)
    for level in lab.levels:
        stats = lab.level_stats(level) or {}
        for optimizer in lab.optimizers:
            for r in load_results(lab.cell_dir(level, optimizer)):
                v = parse_variant(r["variant"])
                rows.append({
                    **r, "level": level.name, "optimizer": optimizer.name, "loss": v.base_name,
                    "lr": v.lr if v.lr is not None else optimizer.recipe_lr,
                    "seed": v.seed if v.seed is not None else default_seed,
                    "ratio_anchor": stats.get("negatives_per_positive"),
                    "ratio_term": stats.get("negative_terms_per_positive_term"),
                    "steps_budget": level.max_steps, "recipe": math.isclose(
                        v.lr if v.lr is not None else optimizer.recipe_lr, optimizer.recipe_lr, rel_tol=1e-6),
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


def _ap(r: dict | None, key: str = "AP") -> float | None:
    """A run's AP (a diverged run scores 0 in the comparisons; None: not run)."""
    if r is None:
        return None
    if r.get("diverged"):
        return 0.0
    v = r.get(key)
    return None if v is None else float(v)


def best_cells(rows: list[dict], lrs: dict[str, tuple[float, ...]] | None = None) -> dict[tuple, dict]:
    """{(level, optimizer, loss): cell}: the best grid lr (first seed's AP at 0.05) and its runs by seed.

    A cell is complete when every lr of its grid ran (lrs: the optimizer's grid; None: the lrs seen).
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["level"], r["optimizer"], r["loss"]), []).append(r)
    cells = {}
    for key, runs in groups.items():
        grid = {r["lr"]: r for r in runs if _is_grid(r)}
        if not grid:
            continue
        first = next(iter(grid.values()))["seed"]
        wanted = lrs.get(key[1]) if lrs else None
        complete = wanted is None or all(any(math.isclose(lr, g) for g in grid) for lr in wanted)
        best_lr = max(grid, key=lambda lr: (_ap(grid[lr]) if _ap(grid[lr]) is not None else -1.0, -lr))
        by_seed = {first: grid[best_lr]}
        by_seed.update({r["seed"]: r for r in runs if r["seed"] != first and math.isclose(r["lr"], best_lr)})
        recipe = next((r for r in grid.values() if r.get("recipe")), None)
        edge = complete and len(grid) > 1 and (math.isclose(best_lr, min(grid)) or math.isclose(best_lr, max(grid)))
        cells[key] = {"lr": best_lr, "by_seed": by_seed, "recipe": recipe, "complete": complete, "edge": edge,
                      "ratio_anchor": runs[0].get("ratio_anchor"), "grid": grid}
    return cells


def _is_grid(r: dict) -> bool:
    """A grid run: `<loss>+lr<V>` without a seed modifier."""
    return parse_variant(r["variant"]).seed is None


def gap(cells: dict[tuple, dict], level: str, optimizer: str, loss: str, against: str, key: str = "AP") -> dict | None:
    """AP(loss) - AP(against) of two best cells: per common seed, mean, range, spread, tie verdict."""
    a, b = cells.get((level, optimizer, loss)), cells.get((level, optimizer, against))
    if a is None or b is None:
        return None
    seeds = sorted(set(a["by_seed"]) & set(b["by_seed"]))
    per_seed = {s: _ap(a["by_seed"][s], key) - _ap(b["by_seed"][s], key) for s in seeds
                if _ap(a["by_seed"][s], key) is not None and _ap(b["by_seed"][s], key) is not None}
    if not per_seed:
        return None
    values = list(per_seed.values())
    spreads = []
    for cell in (a, b):
        aps = [_ap(cell["by_seed"][s], key) for s in per_seed]
        spreads.append(max(aps) - min(aps))
    mean = float(np.mean(values))
    spread = max(spreads) if len(per_seed) > 1 else None
    verdict = "one seed" if spread is None else ("tie" if abs(mean) <= spread else ("ahead" if mean > 0 else "behind"))
    return {"per_seed": per_seed, "mean": mean, "min": min(values), "max": max(values), "spread": spread,
            "verdict": verdict}


def last_gain(val_csv: Path) -> float | None:
    """AP at the last validation minus AP at the one before (None with fewer than two)."""
    rows = sorted((int(r["step"]), r["AP"]) for r in read_rows(val_csv) if r.get("AP") not in (None, ""))
    return float(rows[-1][1]) - float(rows[-2][1]) if len(rows) >= 2 else None


# ---------------------------------------------------------------------------------------------
# summary.md


def _f(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def summary_markdown(lab, rows: list[dict]) -> str:
    lrs = {o.name: o.lrs for o in lab.optimizers}
    cells = best_cells(rows, lrs)
    out = ["# The imbalance lab: best-of-grid cells", ""]
    out += [f"Preset `{lab.preset}`; {len(rows)} finished runs (results.csv). Written by detector.study.lab_report.",
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
        out.append(f"- **{o.name}**: grid {', '.join(f'{lr:g}' for lr in o.lrs)}; recipe lr {o.recipe_lr:g}; "
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
        hi = ", ".join(f"s{s} {_f(_ap(c['by_seed'][s]))}" for s in seeds)
        lo = ", ".join(f"s{s} {_f(_ap(c['by_seed'][s], 'AP_low'))}" for s in seeds)
        mean = np.mean([_ap(c["by_seed"][s]) for s in seeds])
        rec = c["recipe"]
        recipe = "–" if rec is None else f"{_f(_ap(rec))} / {_f(_ap(rec, 'AP_low'))}"
        level = next(lv for lv in lab.levels if lv.name == key[0])
        optimizer = next(o for o in lab.optimizers if o.name == key[1])
        rise = last_gain(lab.cell_dir(level, optimizer) / "runs" / c["by_seed"][min(seeds)]["variant"] / "val.csv")
        out.append(f"| {key[0]} | {key[1]} | {key[2]} | {c['lr']:g}{' (edge)' if c['edge'] else ''} | {hi} | {lo} | "
                   f"{mean:.3f} | {recipe} | {'–' if rise is None else f'{rise:+.3f}'} | "
                   f"{'yes' if c['complete'] else 'no'} |")
    out += ["", "## Gaps", "",
            "AP(loss) − AP(CE with π = 0.01) of the best cells, per seed; a gap no larger than the seed spread (the "
            "larger AP range of the two losses over the seeds) is a tie.", "",
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
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# Figures.


def plot_gap_vs_imbalance(lab, rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    cells = best_cells(rows, {o.name: o.lrs for o in lab.optimizers})
    fig, axes = plt.subplots(1, len(THRESHOLDS), figsize=(6.5 * len(THRESHOLDS), 4.8), sharey=True)
    colors = plt.get_cmap("tab10")
    drawn = False
    for ax, (key, tlabel) in zip(axes, THRESHOLDS):
        for oi, optimizer in enumerate(lab.optimizers):
            for gi, (loss, against, label) in enumerate(GAPS):
                xs, ys, lo, hi, prelim = [], [], [], [], []
                for level in lab.levels:
                    st = lab.level_stats(level) or {}
                    g = gap(cells, level.name, optimizer.name, loss, against, key)
                    if g is None or not st:
                        continue
                    xs.append(st["negatives_per_positive"])
                    ys.append(g["mean"])
                    lo.append(g["mean"] - g["min"])
                    hi.append(g["max"] - g["mean"])
                    both = (cells[(level.name, optimizer.name, loss)], cells[(level.name, optimizer.name, against)])
                    prelim.append(g["spread"] is None or not all(c["complete"] for c in both))
                if not xs:
                    continue
                order = np.argsort(xs)
                xs, ys = np.array(xs)[order], np.array(ys)[order]
                err = np.array([np.array(lo)[order], np.array(hi)[order]])
                marker = "o" if gi == 0 else "s"
                weak = np.array(prelim, dtype=bool)[order]  # hollow: the grid is not complete, or one seed only
                ax.errorbar(xs, ys, yerr=err, ls="-" if gi == 0 else "--", color=colors(oi), capsize=4,
                            label=f"{label}, {optimizer.name}")
                ax.plot(xs[~weak], ys[~weak], ls="none", marker=marker, ms=7, color=colors(oi), zorder=3)
                ax.plot(xs[weak], ys[weak], ls="none", marker=marker, ms=7, mfc="white", mec=colors(oi), zorder=3)
                drawn = True
        ax.axhline(0, color="gray", lw=1)
        ax.set_xscale("log")
        ax.set(xlabel="negative : positive anchors (1 : x, measured)", title=f"detections with {tlabel}")
        ax.grid(alpha=0.3, which="both")
        if not drawn:
            ax.text(0.5, 0.5, "no finished pair of cells yet", ha="center", va="center", transform=ax.transAxes)
    axes[0].set_ylabel("AP difference (best-of-grid cells)")
    if drawn:
        axes[0].legend(fontsize=8)
    fig.suptitle("Where focal loss beats plain CE: the gap against the imbalance\n(error bars: range over seeds; "
                 "hollow: a grid not complete or one seed only, preliminary)", y=1.04)
    save_figure(fig, path)


def plot_ap_over_steps_best(lab, rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    cells = best_cells(rows)
    fig, axes = plt.subplots(1, len(lab.levels), figsize=(5.5 * len(lab.levels), 4.5), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, level in zip(axes[0], lab.levels):
        for oi, optimizer in enumerate(lab.optimizers):
            for li, loss in enumerate(lab.losses):
                c = cells.get((level.name, optimizer.name, loss))
                if c is None:
                    continue
                run = c["by_seed"][min(c["by_seed"])]
                val = read_columns(lab.cell_dir(level, optimizer) / "runs" / run["variant"] / "val.csv")
                if val:
                    ax.plot(val["step"], val["AP"], marker="o", ms=3, color=colors(li),
                            ls=("-", "--", ":")[oi % 3], label=f"{loss} lr {c['lr']:g}, {optimizer.name}")
        ax.set(xlabel="training step", ylabel="validation AP", title=f"level {level.name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("AP over training of the best-of-grid cells (first seed)")
    save_figure(fig, path)


def plot_cells(lab, rows: list[dict]) -> None:
    """In each <level>_<optimizer>/ folder: AP over steps, Figure-4 CDF and score histograms of its best cells."""
    cells = best_cells(rows)
    for level in lab.levels:
        for optimizer in lab.optimizers:
            best = []
            for loss in sorted(lab.losses, key=lambda n: parse_variant(n).cls_loss != "focal"):  # focal first: Figure 4's model
                c = cells.get((level.name, optimizer.name, loss))
                if c is not None:
                    best.append(c["by_seed"][min(c["by_seed"])])
            if not best:
                continue
            folder = lab.cell_dir(level, optimizer)
            stats = load_stats(folder, best)
            colors = variant_colors(best)
            plot_ap_over_steps(folder, best, colors)
            plot_loss_cdf(folder, best, stats)
            plot_background_scores(folder, best, stats, colors)


def write_lab_report(lab, plots: bool = True) -> list[dict]:
    """results.csv and summary.md (and, with plots, every figure); returns the runs."""
    import matplotlib

    matplotlib.use("Agg")
    rows = lab_runs(lab)
    write_atomic(lab.out / "results.csv", runs_csv(rows))
    write_atomic(lab.out / "summary.md", summary_markdown(lab, rows))
    if plots:
        plot_gap_vs_imbalance(lab, rows, lab.out / "gap_vs_imbalance.png")
        plot_ap_over_steps_best(lab, rows, lab.out / "ap_over_steps_best.png")
        plot_cells(lab, rows)
    return rows
