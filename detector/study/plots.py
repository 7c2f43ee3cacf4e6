"""The loss study's plots (matplotlib, Agg), from the files the runner and the recorder wrote.

| file                        | what it shows                                                        |
|-----------------------------|----------------------------------------------------------------------|
| ap_over_steps.png           | validation AP against the training step, every variant on one chart  |
| ap_vs_gamma.png             | final AP against gamma (focal loss; gamma 0 is alpha-balanced CE)     |
| ap_vs_alpha.png             | final AP against alpha at gamma 0 (alpha-balanced CE)                |
| loss_share_over_steps.png   | share of the classification loss from negatives / easy negatives     |
| loss_cdf.png                | the paper's Figure 4: normalised loss CDF of one model, per gamma     |
| loss_cdf_by_variant.png     | the same under each variant's own training loss                       |
| background_scores.png       | histograms of background-anchor scores (and positives' true-class)  |

The paper's Table 1 numbers (COCO minival AP in percent, ResNet-50-FPN, 600 px; each row's paper_ap,
from the preset's study.losses) are drawn on a second axis of the AP-against-gamma/alpha plots for
the shape, never on the same scale. A row with a `+` departure from the recipe is left off both.

The imbalance lab's figures (matplotlib, Agg), from its runs (detector.study.report.lab_runs).

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
from typing import Any

from ..io import atomic_path
import numpy as np

from .anchor_stats import neg_terms_per_pos
from .cells import GAPS, NOISE_FLOOR, THRESHOLDS, best_cells, gap
from .first_step import closed_form, first_step_rows, has_fixed_prior
from .records import load_stats, read_columns


#: Every plot of a study, with its title in results.md.
PLOT_TITLES: dict[str, str] = {
    "ap_over_steps.png": "Validation AP over training, every variant",
    "ap_vs_gamma.png": "Final AP against gamma (focal loss)",
    "ap_vs_alpha.png": "Final AP against alpha (alpha-balanced CE)",
    "loss_share_over_steps.png": "Share of the classification loss from negatives and easy negatives",
    "loss_cdf.png": "Cumulative normalised loss of positives and negatives (the paper's Figure 4)",
    "loss_cdf_by_variant.png": "The same, each variant under its own training loss",
    "background_scores.png": "Scores of background anchors (and of positives' true class)",
}
PLOTS: tuple[str, ...] = tuple(PLOT_TITLES)
REFERENCE_VARIANT = "focal_g2_a0.25"  # the model of the Figure-4 plot, when the study has it



def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    valid = np.convolve(np.nan_to_num(values), kernel, mode="valid")
    return np.concatenate([np.full(window - 1, np.nan), valid])


def variant_colors(results: list[dict]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(results) <= 10 else "tab20"]
    return {r["variant"]: cmap(i % cmap.N) for i, r in enumerate(results)}


def _recipe_row(r: dict) -> bool:
    """A row with the prior init and no `+` departure from the recipe: the paper's rows have no other kind."""
    return bool(r.get("prior_init")) and "+" not in r["variant"]


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def _titled(text: str, context: str) -> str:
    return f"{context}\n{text}" if context else text


def plot_ap_over_steps(out: Path, results: list[dict], colors: dict, context: str = "") -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = False
    for r in results:
        val = read_columns(out / "runs" / r["variant"] / "val.csv")
        color = colors[r["variant"]]
        if val:
            ax.plot(val["step"], val["AP"], marker="o", ms=3, color=color, label=r["variant"])
            drawn = True
        if r.get("diverged"):
            ax.plot([r["diverged_step"]], [0.0], marker="x", ms=9, mew=2, color=color,
                    label=f"{r['variant']} (diverged at step {r['diverged_step']})")
            drawn = True
    if not drawn:
        _empty(ax, "no validation yet")
    ax.set(xlabel="training step", ylabel="validation AP (pycocotools, 0-1)", title=_titled("AP over training", context))
    ax.set_ylim(bottom=-0.02)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=7, loc="upper left", ncol=2)
    save_figure(fig, out / "ap_over_steps.png")


def _paper_axis(ax, xs: list[float], ys: list[float], label: str):
    twin = ax.twinx()
    twin.plot(xs, ys, ls="--", marker="s", ms=4, color="gray", alpha=0.7, label=label)
    twin.set_ylabel("paper, COCO AP (%)", color="gray")
    twin.tick_params(axis="y", colors="gray")
    return twin


def plot_ap_vs_gamma(out: Path, results: list[dict], colors: dict) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = []
    for r in results:
        focal_or_alpha_ce = r["loss"] == "focal" or (r["loss"] == "ce" and r["alpha"] is not None)
        if _recipe_row(r) and focal_or_alpha_ce:
            rows.append((r["gamma"], r["alpha"], r))
    paper_rows = sorted(((g, a, r) for g, a, r in rows if r["loss"] == "focal" and r.get("paper_ap") is not None
                         and not r.get("diverged")), key=lambda t: (t[0], t[2]["variant"]))
    if paper_rows:
        ax.plot([g for g, _, _ in paper_rows], [r["AP"] for _, _, r in paper_rows], marker="o", color="C0",
                label="this study, the paper's alpha for each gamma")
        for g, a, r in paper_rows:
            ax.annotate(f"α={a:g}", (g, r["AP"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    others = [(g, a, r) for g, a, r in rows if (g, a, r) not in paper_rows]
    for g, a, r in others:
        ap = 0.0 if r.get("diverged") else r["AP"]
        ax.plot([g], [ap], marker="x" if r.get("diverged") else "^", color=colors[r["variant"]], ls="",
                label=r["variant"] + (" (diverged)" if r.get("diverged") else ""))
    for r in results:
        if r["variant"] == "ce_prior" and not r.get("diverged"):
            ax.axhline(r["AP"], color="C3", ls=":", label="plain CE with prior init")
    if not rows:
        _empty(ax, "no focal-loss variant in this study")
    ax.set(xlabel="gamma", ylabel="final AP (0-1)", title="AP against gamma")
    ax.set_ylim(bottom=-0.02)
    ax.grid(alpha=0.3)
    twin = _paper_axis(ax, [g for g, _, _ in paper_rows], [r["paper_ap"] for _, _, r in paper_rows],
                       "paper Table 1b (best alpha)")
    handles = ax.get_legend_handles_labels()
    h2 = twin.get_legend_handles_labels()
    ax.legend(handles[0] + h2[0], handles[1] + h2[1], fontsize=7, loc="lower center")
    save_figure(fig, out / "ap_vs_gamma.png")


def plot_ap_vs_alpha(out: Path, results: list[dict], colors: dict) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = []
    for r in results:
        if _recipe_row(r) and r["gamma"] == 0 and r["alpha"] is not None and r["loss"] in ("ce", "focal"):
            points.append((r["alpha"], r))
    alphas = sorted({a for a, _ in points})
    pos = {a: i for i, a in enumerate(alphas)}
    ok = sorted(((a, r) for a, r in points if not r.get("diverged")), key=lambda t: (t[0], t[1]["variant"]))
    if ok:
        ax.plot([pos[a] for a, _ in ok], [r["AP"] for _, r in ok], marker="o", color="C0",
                label="this study (gamma 0)")
        for a, r in ok:
            ax.annotate(r["variant"], (pos[a], r["AP"]), textcoords="offset points", xytext=(4, 4), fontsize=6)
    for a, r in points:
        if r.get("diverged"):
            ax.plot([pos[a]], [0.0], marker="x", color=colors[r["variant"]], ls="", label=f"{r['variant']} (diverged)")
    for r in results:
        if r["variant"] == "ce_prior" and not r.get("diverged"):
            ax.axhline(r["AP"], color="C3", ls=":", label="plain CE with prior init (no alpha)")
    if not points:
        _empty(ax, "no alpha-balanced CE variant in this study")
    ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    ax.set(xlabel="alpha (weight of the positives)", ylabel="final AP (0-1)", title="AP against alpha, gamma = 0")
    ax.set_ylim(bottom=-0.02)
    ax.grid(alpha=0.3)
    paper = sorted((pos[a], r["paper_ap"]) for a, r in points if r.get("paper_ap") is not None)
    twin = _paper_axis(ax, [x for x, _ in paper], [y for _, y in paper], "paper Table 1a")
    handles = ax.get_legend_handles_labels()
    h2 = twin.get_legend_handles_labels()
    ax.legend(handles[0] + h2[0], handles[1] + h2[1], fontsize=7, loc="lower center")
    save_figure(fig, out / "ap_vs_alpha.png")


def plot_loss_share(out: Path, results: list[dict], colors: dict) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    drawn = False
    for r in results:
        train = read_columns(out / "runs" / r["variant"] / "train.csv")
        if not train:
            continue
        window = max(1, len(train["step"]) // 40)
        for ax, key in zip(axes, ("neg_loss_share", "easy_neg_loss_share")):
            ax.plot(train["step"], _smooth(train[key], window), color=colors[r["variant"]], lw=1.2,
                    marker="o" if len(train["step"]) < 10 else None, ms=3, label=r["variant"])
        drawn = True
    axes[0].set(title="from negatives (background anchors)", xlabel="training step",
                ylabel="share of the classification loss")
    axes[1].set(title="from easy negatives (p < 0.5, i.e. p_t > 0.5)", xlabel="training step")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_ylim(-0.02, 1.02)
        if not drawn:
            _empty(ax, "no training record yet")
    if drawn:
        axes[1].legend(fontsize=7, loc="best")
    fig.suptitle("Where the classification loss comes from during training (moving average)")
    save_figure(fig, out / "loss_share_over_steps.png")


def _reference(results: list[dict], stats: dict[str, dict]) -> str | None:
    finished = [r["variant"] for r in results if r["variant"] in stats]
    if REFERENCE_VARIANT in finished:
        return REFERENCE_VARIANT
    for r in results:
        if r["variant"] in finished and r["loss"] == "focal" and r["gamma"] == 2 and _recipe_row(r):
            return r["variant"]
    return finished[0] if finished else None


def plot_loss_cdf(out: Path, results: list[dict], stats: dict[str, dict], context: str = "") -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    name = _reference(results, stats)
    if name is None:
        for ax in axes:
            _empty(ax, "no finished variant")
    else:
        st = stats[name]
        x = np.array(st["fractions"])
        cmap = plt.get_cmap("viridis")
        gammas = st["gammas"]
        for i, g in enumerate(gammas):
            color = cmap(i / max(1, len(gammas) - 1))
            key = f"{g:g}"
            for ax, kind in zip(axes[:2], ("positive", "negative")):
                y = np.array(st["cdf"][kind][key], dtype=float)
                ax.plot(x, y, color=color, label=f"γ = {key}")
            y = np.array(st["cdf"]["negative"][key], dtype=float)
            hardest = 1 - x[::-1]
            axes[2].plot(hardest[1:], (1 - y[::-1])[1:], color=color, label=f"γ = {key}")
        for ax, kind in zip(axes[:2], ("positive", "negative")):
            n = st["positives"] if kind == "positive" else st["negatives"]
            ax.set(xlabel=f"fraction of {kind} anchors (sorted by loss, lowest first)",
                   ylabel="cumulative normalised loss", title=f"{kind} anchors ({n:,})", xlim=(0, 1), ylim=(0, 1))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="upper left")
        axes[2].set_xscale("log")
        axes[2].set(xlabel="hardest fraction of the negative anchors", ylabel="share of the negatives' loss",
                    title="negatives: how concentrated (log scale)", ylim=(0, 1.02))
        axes[2].grid(alpha=0.3, which="both")
        axes[2].legend(fontsize=8, loc="upper left")
        fig.suptitle(_titled(f"Normalised loss CDF, one trained model ({name}, {st['images']} validation images), "
                             "focal loss evaluated at several γ (cf. the paper's Figure 4)", context),
                     y=1.04 if context else 0.98)
    save_figure(fig, out / "loss_cdf.png")


def plot_loss_cdf_by_variant(out: Path, results: list[dict], stats: dict[str, dict], colors: dict) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    drawn = False
    for r in results:
        st = stats.get(r["variant"])
        if not st:
            continue
        x = np.array(st["fractions"])
        key = f"{st['own_gamma']:g}"
        for ax, kind in zip(axes, ("positive", "negative")):
            ax.plot(x, np.array(st["cdf"][kind][key], dtype=float), color=colors[r["variant"]],
                    label=f"{r['variant']} (γ {key})")
        drawn = True
    for ax, kind in zip(axes, ("positive", "negative")):
        ax.set(xlabel=f"fraction of {kind} anchors (lowest loss first)", ylabel="cumulative normalised loss",
               title=f"{kind} anchors", xlim=(0, 1), ylim=(0, 1))
        ax.grid(alpha=0.3)
        if not drawn:
            _empty(ax, "no finished variant")
    if drawn:
        axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Normalised loss CDF at the end of training, each variant under the loss it was trained with")
    save_figure(fig, out / "loss_cdf_by_variant.png")


def plot_background_scores(out: Path, results: list[dict], stats: dict[str, dict], colors: dict,
                           context: str = "") -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    drawn = False
    for r in results:
        st = stats.get(r["variant"])
        if not st:
            continue
        edges = np.array(st["score_bins"], dtype=float)
        edges[0] = edges[1] / 10  # the first bin starts at 0: drawn from a decade lower on the log axis
        for ax, kind in zip(axes, ("background", "positive")):
            counts = np.array(st["score_hist"][kind], dtype=float)
            total = counts.sum()
            if total > 0:
                ax.stairs(counts / total, edges, color=colors[r["variant"]], label=r["variant"])
        drawn = True
    axes[0].set(title="background anchors: highest class score", ylabel="fraction of anchors")
    axes[1].set(title="positive anchors: score of the true class")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("score (sigmoid)")
        ax.axvline(0.05, color="gray", ls=":", lw=1)
        ax.grid(alpha=0.3)
        if not drawn:
            _empty(ax, "no finished variant")
    if drawn:
        axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(_titled("Score histograms at the end of training (dotted: the 0.05 inference threshold)", context),
                 y=1.04 if context else 0.98)
    save_figure(fig, out / "background_scores.png")


def write_plots(out: Path, results: list[dict], stats: dict[str, dict]) -> list[Path]:
    """Every plot of PLOTS for sorted results and their stats.json; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    colors = variant_colors(results)
    plot_ap_over_steps(out, results, colors)
    plot_ap_vs_gamma(out, results, colors)
    plot_ap_vs_alpha(out, results, colors)
    plot_loss_share(out, results, colors)
    plot_loss_cdf(out, results, stats)
    plot_loss_cdf_by_variant(out, results, stats, colors)
    plot_background_scores(out, results, stats, colors)
    return [out / p for p in PLOTS]


LINE_STYLES = ("-", "--", ":")


def loss_colors(lab) -> dict:
    """{loss: colour}: one colour per loss in every figure of the lab."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {loss: cmap(i % cmap.N) for i, loss in enumerate(lab.losses)}


def _ratio_label(lab, level) -> str:
    st = lab.level_stats(level) or {}
    return f", 1 : {st['negatives_per_positive']:,.0f} anchors" if st.get("negatives_per_positive") else ""


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
        v = lab.variant(loss)
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
            for loss in sorted(lab.losses, key=lambda n: lab.variant(n).detector["cls_loss"] != "focal"):  # focal first: Figure 4's model
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
