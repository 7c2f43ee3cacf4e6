"""The imbalance lab's figures (matplotlib, Agg), from its runs (detector.study.lab_report.lab_runs).

Every figure gives a loss one colour (`loss_colors`, the preset's order) and an optimizer one line
style (solid, dashed, dotted in the preset's order); titles name the level, optimizer and seed.

- gap_vs_imbalance.png: the gaps AP(focal) - AP(CE), AP(Sampling-Free) - AP(CE) of the best cells
  against the measured anchor-level ratio (log axis), one line per optimizer and comparison (the
  compared loss's colour), error bars ± the tie rule's seed spread (a bar that crosses 0 is a tie);
  one panel per score threshold. Hollow: preliminary (grid not complete, or one seed); a cross,
  left off the line: both cells below the noise floor (the gap says nothing).
- ap_over_steps_best.png: validation AP over the steps of the best-of-grid cells (first seed).
- first_step_loss.png: each loss's classification loss at the first step against the negative :
  positive anchors (log-log; the gap figure's axis): the closed form at the prior init as a line,
  the runs' first logged step as points at their first batch's own ratio (detector.study.first_step).
- In each <level>_<optimizer>/ folder: the loss study's ap_over_steps.png, loss_cdf.png (the
  paper's Figure 4, from the best focal cell) and background_scores.png of the best cells.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .anchor_stats import neg_terms_per_pos
from .first_step import closed_form, first_step_rows, has_fixed_prior
from .lab_cells import GAPS, NOISE_FLOOR, THRESHOLDS, best_cells, gap
from .plots import plot_ap_over_steps, plot_background_scores, plot_loss_cdf, save_figure

LINE_STYLES = ("-", "--", ":")


def loss_colors(lab) -> dict:
    """{loss: colour}: one colour per loss in every figure of the lab."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {loss: cmap(i % cmap.N) for i, loss in enumerate(lab.losses)}


def _ratio_label(lab, level) -> str:
    st = lab.level_stats(level) or {}
    return f", 1 : {st['negatives_per_positive']:,.0f} anchors" if st.get("negatives_per_positive") else ""
from .records import load_stats, read_columns
from .variants import parse_variant


def plot_gap_vs_imbalance(lab, rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cells = best_cells(rows, lab.grids())
    fig, axes = plt.subplots(1, len(THRESHOLDS), figsize=(6.5 * len(THRESHOLDS), 4.8), sharey=True)
    colors = loss_colors(lab)
    drawn = False
    for ax, (key, tlabel) in zip(axes, THRESHOLDS):
        for oi, optimizer in enumerate(lab.optimizers):
            for gi, (loss, against, label) in enumerate(GAPS):
                xs, ys, bars, prelim, floor = [], [], [], [], []
                for level in lab.levels:
                    st = lab.level_stats(level) or {}
                    g = gap(cells, level.name, optimizer.name, loss, against, key)
                    if g is None or not st:
                        continue
                    xs.append(st["negatives_per_positive"])
                    ys.append(g["mean"])
                    bars.append(np.nan if g["spread"] is None else g["spread"])
                    both = (cells[(level.name, optimizer.name, loss)], cells[(level.name, optimizer.name, against)])
                    prelim.append(g["spread"] is None or not all(c["complete"] for c in both))
                    floor.append(g["floor"])
                if not xs:
                    continue
                order = np.argsort(xs)
                # nudged sideways on the log axis, so the lines of one level do not hide each other
                dodge = 1.0 + 0.04 * (oi * len(GAPS) + gi - (len(lab.optimizers) * len(GAPS) - 1) / 2)
                xs, ys = np.array(xs)[order] * dodge, np.array(ys)[order]
                err = np.array(bars)[order]
                color, marker = colors.get(loss, "black"), "os^"[oi % 3]
                at_floor = np.array(floor, dtype=bool)[order]
                weak = np.array(prelim, dtype=bool)[order] & ~at_floor  # hollow: grid not complete, or one seed
                full = ~weak & ~at_floor
                line = np.where(at_floor, np.nan, ys)  # no line into a noise-floor point
                ax.errorbar(xs, line, yerr=np.where(at_floor, np.nan, err), ls=LINE_STYLES[oi % 3], color=color,
                            capsize=4, label=f"{label}, {optimizer.name}")
                ax.plot(xs[full], ys[full], ls="none", marker=marker, ms=7, color=color, zorder=3)
                ax.plot(xs[at_floor], ys[at_floor], ls="none", marker="x", ms=9, mew=2, color=color, zorder=3)
                ax.plot(xs[weak], ys[weak], ls="none", marker=marker, ms=7, mfc="white", mec=color, zorder=3)
                drawn = True
        ax.axhline(0, color="gray", lw=1)
        ax.set_xscale("log")
        ratios = sorted(st["negatives_per_positive"] for lv in lab.levels if (st := lab.level_stats(lv)))
        ax.set_xticks(ratios, [f"{x:,.0f}" for x in ratios])  # ticks at the levels: readable on a narrow range too
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set(xlabel="negative : positive anchors (1 : x, measured)", title=f"detections with {tlabel}")
        ax.grid(alpha=0.3, which="both")
        if not drawn:
            ax.text(0.5, 0.5, "no finished pair of cells yet", ha="center", va="center", transform=ax.transAxes)
    axes[0].set_ylabel("AP difference (best-of-grid cells)")
    if drawn:
        axes[0].legend(fontsize=8, handlelength=3.5)
    fig.suptitle("AP(focal) − AP(CE) and AP(Sampling-Free) − AP(CE) of the best-of-grid cells against the "
                 "imbalance, mean of the seeds\n(error bars: ± the tie rule's seed spread, a bar across 0 is a tie; "
                 "hollow: a grid not complete or one seed only, preliminary;\nx, off the line: both losses below "
                 f"{NOISE_FLOOR:g} AP, the noise floor; points nudged apart sideways)", y=1.08)
    save_figure(fig, path)


def plot_ap_over_steps_best(lab, rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    cells = best_cells(rows, lab.grids())
    fig, axes = plt.subplots(1, len(lab.levels), figsize=(5.5 * len(lab.levels), 4.5), squeeze=False)
    colors = loss_colors(lab)
    for ax, level in zip(axes[0], lab.levels):
        for oi, optimizer in enumerate(lab.optimizers):
            for li, loss in enumerate(lab.losses):
                c = cells.get((level.name, optimizer.name, loss))
                if c is None:
                    continue
                run = c["by_seed"][min(c["by_seed"])]
                val = read_columns(lab.cell_dir(level, optimizer) / "runs" / run["variant"] / "val.csv")
                if val:
                    ax.plot(val["step"], val["AP"], marker="o", ms=3, color=colors[loss],
                            ls=LINE_STYLES[oi % 3], label=f"{loss} lr {c['lr']:g}, {optimizer.name}")
        ax.set(xlabel="training step", ylabel="validation AP", title=f"level {level.name}{_ratio_label(lab, level)}")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="upper left", handlelength=4)
        else:
            ax.text(0.5, 0.5, "no finished cell yet", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"AP over training of the best-of-grid cells, seed {lab.seeds[0]} "
                 f"({', '.join(f'{o.name} {LINE_STYLES[i % 3]}' for i, o in enumerate(lab.optimizers))})")
    save_figure(fig, path)


def plot_first_step_loss(lab, rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    first = first_step_rows(lab, rows)
    fig, ax = plt.subplots(figsize=(7, 4.8))
    colors = loss_colors(lab)
    stats = {lv.name: lab.level_stats(lv) or {} for lv in lab.levels}
    k = next((int(st["num_classes"]) for st in stats.values() if st.get("num_classes")), None)
    level_ratios = {n: st["negatives_per_positive"] for n, st in stats.items() if st.get("negatives_per_positive")}
    batch = {(r["level"], r["loss"]): r["measured"]["negatives"] / r["measured"]["positives"] for r in first
             if r["measured"] and r["measured"].get("positives") and "negatives" in r["measured"]}
    ratios = [*level_ratios.values(), *batch.values()]
    xs = np.geomspace(min(ratios, default=10.0) / 3, max(ratios, default=1e3) * 3, 200)
    for loss in lab.losses:
        v = parse_variant(loss)
        if has_fixed_prior(v) and k:  # a positive anchor brings K - 1 negative terms, a negative one K
            ax.plot(xs, [closed_form(v, neg_terms_per_pos(1.0, x, k))[0] for x in xs], color=colors[loss],
                    label=f"{loss}: closed form")
        pts = [(batch[(r["level"], loss)], r["measured"]["loss_cls"]) for r in first
               if r["loss"] == loss and (r["level"], loss) in batch]
        if pts:
            ax.plot(*zip(*pts), ls="none", marker="o", ms=7, mfc="white", mec=colors[loss], mew=2,
                    label=f"{loss}: measured, first batch")
    for name, x in level_ratios.items():
        ax.axvline(x, color="gray", ls=":", lw=1)
        ax.text(x, 1.02, name, transform=ax.get_xaxis_transform(), ha="center", fontsize=8, color="gray")
    ax.set(xscale="log", yscale="log", xlabel="negative : positive anchors (1 : x, measured)",
           ylabel="classification loss per positive anchor at step 1")
    ax.grid(alpha=0.3, which="both")
    if ax.lines:
        ax.legend(fontsize=8)
    fig.suptitle("The classification loss before the first update, at the prior init, every optimizer and seed "
                 f"alike\n(dotted: each level's mean ratio; points: each level's first batch of seed {lab.seeds[0]};\n"
                 f"closed form over the K·x + K − 1 negative sigmoid terms a positive anchor brings, K = {k})", y=1.08)
    save_figure(fig, path)


def plot_cells(lab, rows: list[dict]) -> None:
    """In each <level>_<optimizer>/ folder: AP over steps, Figure-4 CDF and score histograms of its best cells."""
    cells = best_cells(rows, lab.grids())
    loss_color = loss_colors(lab)
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
            colors = {r["variant"]: loss_color.get(r["loss"], "black") for r in best}
            seeds = sorted({r["seed"] for r in best})
            context = (f"level {level.name}{_ratio_label(lab, level)}, {optimizer.name}, each loss's best-of-grid lr, "
                       f"seed {', '.join(map(str, seeds))}")
            plot_ap_over_steps(folder, best, colors, context)
            plot_loss_cdf(folder, best, stats, context)
            plot_background_scores(folder, best, stats, colors, context)


def write_lab_plots(lab, rows: list[dict]) -> None:
    """Every figure of the lab (the module doc) from its runs."""
    import matplotlib

    matplotlib.use("Agg")
    plot_gap_vs_imbalance(lab, rows, lab.out / "gap_vs_imbalance.png")
    plot_ap_over_steps_best(lab, rows, lab.out / "ap_over_steps_best.png")
    plot_first_step_loss(lab, rows, lab.out / "first_step_loss.png")
    plot_cells(lab, rows)


__all__ = ["plot_ap_over_steps_best", "plot_cells", "plot_first_step_loss", "plot_gap_vs_imbalance", "write_lab_plots"]
