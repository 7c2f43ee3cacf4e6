"""The imbalance lab's figures (matplotlib, Agg), from its runs (detector.study.lab_report.lab_runs).

- gap_vs_imbalance.png: the gaps AP(focal) - AP(CE), AP(Sampling-Free) - AP(CE) of the best cells
  against the measured anchor-level ratio (log axis), one line per optimizer and comparison,
  error bars from the per-seed gaps; one panel per score threshold. Hollow: preliminary (grid not
  complete, or one seed); a cross: both cells below the noise floor (the gap says nothing).
- ap_over_steps_best.png: validation AP over the steps of the best-of-grid cells (first seed).
- first_step_loss.png: each loss's classification loss at the first step against the negative :
  positive sigmoid terms (log-log): the closed form at the prior init as a line, the runs' first
  logged step as points at their first batch's own ratio (detector.study.first_step).
- In each <level>_<optimizer>/ folder: the loss study's ap_over_steps.png, loss_cdf.png (the
  paper's Figure 4, from the best focal cell) and background_scores.png of the best cells.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .first_step import closed_form, first_step_rows, has_fixed_prior
from .lab_cells import GAPS, NOISE_FLOOR, THRESHOLDS, best_cells, gap
from .plots import plot_ap_over_steps, plot_background_scores, plot_loss_cdf, save_figure, variant_colors
from .records import load_stats, read_columns
from .variants import parse_variant


def plot_gap_vs_imbalance(lab, rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    cells = best_cells(rows, lab.grids())
    fig, axes = plt.subplots(1, len(THRESHOLDS), figsize=(6.5 * len(THRESHOLDS), 4.8), sharey=True)
    colors = plt.get_cmap("tab10")
    drawn = False
    for ax, (key, tlabel) in zip(axes, THRESHOLDS):
        for oi, optimizer in enumerate(lab.optimizers):
            for gi, (loss, against, label) in enumerate(GAPS):
                xs, ys, lo, hi, prelim, floor = [], [], [], [], [], []
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
                    floor.append(g["floor"])
                if not xs:
                    continue
                order = np.argsort(xs)
                # nudged sideways on the log axis, so the lines of one level do not hide each other
                dodge = 1.0 + 0.04 * (oi * len(GAPS) + gi - (len(lab.optimizers) * len(GAPS) - 1) / 2)
                xs, ys = np.array(xs)[order] * dodge, np.array(ys)[order]
                err = np.array([np.array(lo)[order], np.array(hi)[order]])
                marker = "o" if gi == 0 else "s"
                at_floor = np.array(floor, dtype=bool)[order]
                weak = np.array(prelim, dtype=bool)[order] & ~at_floor  # hollow: grid not complete, or one seed
                full = ~weak & ~at_floor
                ax.errorbar(xs, ys, yerr=err, ls="-" if gi == 0 else "--", color=colors(oi), capsize=4,
                            label=f"{label}, {optimizer.name}")
                ax.plot(xs[full], ys[full], ls="none", marker=marker, ms=7, color=colors(oi), zorder=3)
                ax.plot(xs[at_floor], ys[at_floor], ls="none", marker="x", ms=9, mew=2, color=colors(oi), zorder=3)
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
    fig.suptitle("AP(focal) − AP(CE) and AP(Sampling-Free) − AP(CE) against the imbalance\n(error bars: range over "
                 "seeds; hollow: a grid not complete or one seed only, preliminary;\nx: both losses below "
                 f"{NOISE_FLOOR:g} AP, the noise floor; points nudged apart sideways)", y=1.08)
    save_figure(fig, path)


def plot_ap_over_steps_best(lab, rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    cells = best_cells(rows, lab.grids())
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
        if ax.lines:
            ax.legend(fontsize=7, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no finished cell yet", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("AP over training of the best-of-grid cells (first seed)")
    save_figure(fig, path)


def plot_first_step_loss(lab, rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    first = first_step_rows(lab, rows)
    fig, ax = plt.subplots(figsize=(7, 4.8))
    colors = plt.get_cmap("tab10")
    level_ratios = {r["level"]: r["ratio_term"] for r in first if r["ratio_term"] is not None}
    ratios = [x for r in first for x in (r["ratio_term"], r["batch_ratio_term"]) if x is not None]
    xs = np.geomspace(min(ratios, default=10.0) / 3, max(ratios, default=1e4) * 3, 200)
    for li, loss in enumerate(lab.losses):
        v = parse_variant(loss)
        if has_fixed_prior(v):
            ax.plot(xs, [closed_form(v, x)[0] for x in xs], color=colors(li), label=f"{loss}: closed form")
        pts = [(r["batch_ratio_term"], r["measured"]["loss_cls"]) for r in first
               if r["loss"] == loss and r["measured"] and r["batch_ratio_term"] is not None]
        if pts:
            ax.plot(*zip(*pts), ls="none", marker="o", ms=7, mfc="white", mec=colors(li), mew=2,
                    label=f"{loss}: measured, first batch")
    for name, x in level_ratios.items():
        ax.axvline(x, color="gray", ls=":", lw=1)
        ax.text(x, 1.02, name, transform=ax.get_xaxis_transform(), ha="center", fontsize=8, color="gray")
    ax.set(xscale="log", yscale="log", xlabel="negative : positive sigmoid terms (1 : x)",
           ylabel="classification loss per positive anchor at step 1")
    ax.grid(alpha=0.3, which="both")
    if ax.lines:
        ax.legend(fontsize=8)
    fig.suptitle("The classification loss before the first update, at the prior init\n(dotted: each level's mean "
                 "ratio; points: each level's first batch)", y=1.04)
    save_figure(fig, path)


def plot_cells(lab, rows: list[dict]) -> None:
    """In each <level>_<optimizer>/ folder: AP over steps, Figure-4 CDF and score histograms of its best cells."""
    cells = best_cells(rows, lab.grids())
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


def write_lab_plots(lab, rows: list[dict]) -> None:
    """Every figure of the lab (the module doc) from its runs."""
    import matplotlib

    matplotlib.use("Agg")
    plot_gap_vs_imbalance(lab, rows, lab.out / "gap_vs_imbalance.png")
    plot_ap_over_steps_best(lab, rows, lab.out / "ap_over_steps_best.png")
    plot_first_step_loss(lab, rows, lab.out / "first_step_loss.png")
    plot_cells(lab, rows)


__all__ = ["plot_ap_over_steps_best", "plot_cells", "plot_first_step_loss", "plot_gap_vs_imbalance", "write_lab_plots"]
