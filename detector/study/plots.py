"""The figures (matplotlib, Agg) of a loss study (PLOT_TITLES) and of the imbalance lab, from the run records.

The paper's Table 1 AP (percent, a ResNet-50-FPN at 600 px: each row's paper_ap) is drawn on a second axis
of the AP-against-gamma/alpha figures, for the shape only; a row with a `+` departure is left off both. In
the lab's figures a loss has one colour (the preset's order) and an optimizer one line style; titles name
the level, optimizer and seed. gap_vs_imbalance.png: the gaps of the best cells (detector.study.cells)
against the measured anchor ratio, error bars the tie rule's seed spread, hollow when preliminary, a cross
off the line at the noise floor; ap_over_steps_best.png (every seed of the best cells); first_step_loss.png
(detector.study.first_step); and in each <level>_<optimizer>/ folder the AP curves, Figure-4 CDF and score
histograms of its best cells.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_path
from ..check_data import neg_terms_per_pos
from .cells import GAPS, NOISE_FLOOR, THRESHOLDS, best_cells, gap
from .first_step import closed_form, first_step_rows
from .records import load_stats, read_columns

#: Every figure of a study, with its title in results.md.
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
LINE_STYLES = ("-", "--", ":")


def palette(names) -> dict:
    """{name: colour}, tab10 (tab20 beyond ten names) in the given order."""
    import matplotlib

    names = list(names)
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _panels(n: int, width: float, height: float = 4.5, **kw):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width, height), squeeze=False, **kw)
    return fig, list(axes[0])


def _finish(fig, axes, path: Path, drawn: bool, empty: str, legend_ax=None, **legend) -> None:
    """Grid, an `empty` note on every panel when nothing was drawn, a legend, the file written atomically."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        if not drawn:
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, color="gray")
    if drawn and legend_ax is not None:
        legend_ax.legend(**{"fontsize": 7, **legend})
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def _titled(text: str, context: str) -> str:
    return f"{context}\n{text}" if context else text


def _recipe_row(r: dict) -> bool:
    """A row with the prior init and no `+` departure from the recipe: the paper's rows have no other kind."""
    return bool(r.get("prior_init")) and "+" not in r["variant"]


def _ap_curves(ax, runs: list[dict], color: dict, label=lambda r: r["variant"], ls: str = "-", **line) -> bool:
    """Each run's validation AP against the step (val.csv), a cross at 0 where it diverged; whether any was drawn.
    color: {variant: colour}; label: a run's legend entry; line: more of matplotlib's plot keywords."""
    drawn = False
    for r in runs:
        val = read_columns(r["folder"] / "val.csv")
        if val:
            ax.plot(val["step"], val["AP"], marker="o", ms=3, color=color[r["variant"]], ls=ls, label=label(r), **line)
        if r.get("diverged"):
            ax.plot([r["diverged_step"]], [0.0], marker="x", ms=9, mew=2, color=color[r["variant"]],
                    label=f"{label(r)} (diverged at step {r['diverged_step']})")
        drawn = drawn or bool(val) or bool(r.get("diverged"))
    return drawn


def plot_ap_over_steps(out: Path, results: list[dict], colors: dict, context: str = "") -> None:
    fig, (ax,) = _panels(1, 8, 5)
    drawn = _ap_curves(ax, results, colors)
    ax.set(xlabel="training step", ylabel="validation AP (pycocotools, 0-1)", title=_titled("AP over training", context))
    ax.set_ylim(bottom=-0.02)
    _finish(fig, [ax], out / "ap_over_steps.png", drawn, "no validation yet", ax, loc="upper left", ncol=2)


def plot_ap_against(out: Path, results: list[dict], colors: dict, knob: str) -> None:
    """ap_vs_gamma.png (focal loss and alpha-balanced CE by gamma, a line through the paper's alpha for each
    gamma) or ap_vs_alpha.png (alpha-balanced CE at gamma 0, alphas evenly spaced); plain CE as a level."""
    fig, (ax,) = _panels(1, 7)
    if knob == "gamma":
        rows = [r for r in results if _recipe_row(r) and (r["loss"] == "focal" or (r["loss"] == "ce" and r["alpha"]
                                                                                    is not None))]
        line = sorted((r for r in rows if r["loss"] == "focal" and r.get("paper_ap") is not None
                       and not r.get("diverged")), key=lambda r: (r["gamma"], r["variant"]))
        x = {r["variant"]: r["gamma"] for r in rows}
        labels, paper = ("this study, the paper's alpha for each gamma", "paper Table 1b (best alpha)"), line
    else:
        rows = [r for r in results if _recipe_row(r) and r["gamma"] == 0 and r["alpha"] is not None
                and r["loss"] in ("ce", "focal")]
        alphas = sorted({r["alpha"] for r in rows})
        x = {r["variant"]: alphas.index(r["alpha"]) for r in rows}
        line = sorted((r for r in rows if not r.get("diverged")), key=lambda r: (r["alpha"], r["variant"]))
        labels, paper = ("this study (gamma 0)", "paper Table 1a"), [r for r in rows if r.get("paper_ap") is not None]
        paper = sorted(paper, key=lambda r: x[r["variant"]])
        ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    if line:
        ax.plot([x[r["variant"]] for r in line], [r["AP"] for r in line], marker="o", color="C0", label=labels[0])
        for r in line:
            ax.annotate(f"α={r['alpha']:g}" if knob == "gamma" else r["variant"], (x[r["variant"]], r["AP"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=7 if knob == "gamma" else 6)
    for r in rows:
        if r not in line and (knob == "gamma" or r.get("diverged")):
            ax.plot([x[r["variant"]]], [0.0 if r.get("diverged") else r["AP"]], ls="", color=colors[r["variant"]],
                    marker="x" if r.get("diverged") else "^", label=r["variant"] + (" (diverged)" if r.get("diverged")
                                                                                     else ""))
    for r in results:
        if r["variant"] == "ce_prior" and not r.get("diverged"):
            ax.axhline(r["AP"], color="C3", ls=":", label="plain CE with prior init" + ("" if knob == "gamma"
                                                                                        else " (no alpha)"))
    title = "AP against gamma" if knob == "gamma" else "AP against alpha, gamma = 0"
    ax.set(xlabel="gamma" if knob == "gamma" else "alpha (weight of the positives)", ylabel="final AP (0-1)",
           title=title)
    ax.set_ylim(bottom=-0.02)
    twin = ax.twinx()
    twin.plot([x[r["variant"]] for r in paper], [r["paper_ap"] for r in paper], ls="--", marker="s", ms=4,
              color="gray", alpha=0.7, label=labels[1])
    twin.set_ylabel("paper, COCO AP (%)", color="gray")
    twin.tick_params(axis="y", colors="gray")
    (h1, l1), (h2, l2) = ax.get_legend_handles_labels(), twin.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower center")
    empty = "no focal-loss variant in this study" if knob == "gamma" else "no alpha-balanced CE variant in this study"
    _finish(fig, [ax], out / f"ap_vs_{knob}.png", bool(rows), empty)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    valid = np.convolve(np.nan_to_num(values), np.ones(window) / window, mode="valid")
    return np.concatenate([np.full(window - 1, np.nan), valid])


def plot_loss_share(out: Path, results: list[dict], colors: dict) -> None:
    fig, axes = _panels(2, 12, sharey=True)
    drawn = False
    for r in results:
        train = read_columns(r["folder"] / "train.csv")
        for ax, key in zip(axes, ("neg_loss_share", "easy_neg_loss_share") if train else ()):
            ax.plot(train["step"], _smooth(train[key], max(1, len(train["step"]) // 40)), color=colors[r["variant"]],
                    lw=1.2, marker="o" if len(train["step"]) < 10 else None, ms=3, label=r["variant"])
        drawn = drawn or bool(train)
    axes[0].set(title="from negatives (background anchors)", xlabel="training step",
                ylabel="share of the classification loss")
    axes[1].set(title="from easy negatives (p < 0.5, i.e. p_t > 0.5)", xlabel="training step")
    axes[0].set_ylim(-0.02, 1.02)
    fig.suptitle("Where the classification loss comes from during training (moving average)")
    _finish(fig, axes, out / "loss_share_over_steps.png", drawn, "no training record yet", axes[1], loc="best")


def _reference(results: list[dict], stats: dict[str, dict]) -> str | None:
    """The model of the Figure-4 plot: REFERENCE_VARIANT, else focal loss at gamma 2, else the first finished."""
    finished = [r for r in results if r["variant"] in stats]
    reference = [r for r in finished if r["variant"] == REFERENCE_VARIANT]
    focal = [r for r in finished if r["loss"] == "focal" and r["gamma"] == 2 and _recipe_row(r)]
    return (reference or focal or finished or [{"variant": None}])[0]["variant"]


def plot_loss_cdf(out: Path, results: list[dict], stats: dict[str, dict], context: str = "") -> None:
    """The paper's Figure 4: one model's normalised loss CDF under each gamma, and how concentrated it is."""
    import matplotlib.pyplot as plt

    fig, axes = _panels(3, 15)
    name = _reference(results, stats)
    if name is not None:
        st, cmap = stats[name], plt.get_cmap("viridis")
        x = np.array(st["fractions"])
        for i, g in enumerate(st["gammas"]):
            key, color = f"{g:g}", cmap(i / max(1, len(st["gammas"]) - 1))
            for ax, kind in zip(axes, ("positive", "negative")):
                ax.plot(x, np.array(st["cdf"][kind][key], dtype=float), color=color, label=f"γ = {key}")
            y = np.array(st["cdf"]["negative"][key], dtype=float)
            axes[2].plot((1 - x[::-1])[1:], (1 - y[::-1])[1:], color=color, label=f"γ = {key}")
        for ax, kind in zip(axes, ("positive", "negative")):
            ax.set(xlabel=f"fraction of {kind} anchors (sorted by loss, lowest first)", xlim=(0, 1), ylim=(0, 1),
                   ylabel="cumulative normalised loss", title=f"{kind} anchors ({st[kind + 's']:,})")
            ax.legend(fontsize=8, loc="upper left")
        axes[2].set(xscale="log", xlabel="hardest fraction of the negative anchors", ylim=(0, 1.02),
                    ylabel="share of the negatives' loss", title="negatives: how concentrated (log scale)")
        fig.suptitle(_titled(f"Normalised loss CDF, one trained model ({name}, {st['images']} validation images), "
                             "focal loss evaluated at several γ (cf. the paper's Figure 4)", context),
                     y=1.04 if context else 0.98)
    _finish(fig, axes, out / "loss_cdf.png", name is not None, "no finished variant", axes[2], fontsize=8,
            loc="upper left")


def plot_loss_cdf_by_variant(out: Path, results: list[dict], stats: dict[str, dict], colors: dict) -> None:
    fig, axes = _panels(2, 12)
    finished = [r for r in results if stats.get(r["variant"])]
    for r in finished:
        st = stats[r["variant"]]
        key = f"{st['own_gamma']:g}"
        for ax, kind in zip(axes, ("positive", "negative")):
            ax.plot(st["fractions"], np.array(st["cdf"][kind][key], dtype=float), color=colors[r["variant"]],
                    label=f"{r['variant']} (γ {key})")
    for ax, kind in zip(axes, ("positive", "negative")):
        ax.set(xlabel=f"fraction of {kind} anchors (lowest loss first)", ylabel="cumulative normalised loss",
               title=f"{kind} anchors", xlim=(0, 1), ylim=(0, 1))
    fig.suptitle("Normalised loss CDF at the end of training, each variant under the loss it was trained with")
    _finish(fig, axes, out / "loss_cdf_by_variant.png", bool(finished), "no finished variant", axes[0],
            loc="upper left")


def plot_background_scores(out: Path, results: list[dict], stats: dict[str, dict], colors: dict,
                           context: str = "") -> None:
    fig, axes = _panels(2, 12)
    finished = [r for r in results if stats.get(r["variant"])]
    for r in finished:
        st = stats[r["variant"]]
        edges = np.array(st["score_bins"], dtype=float)
        edges[0] = edges[1] / 10  # the first bin starts at 0: drawn from a decade lower on the log axis
        for ax, kind in zip(axes, ("background", "positive")):
            counts = np.array(st["score_hist"][kind], dtype=float)
            if counts.sum() > 0:
                ax.stairs(counts / counts.sum(), edges, color=colors[r["variant"]], label=r["variant"])
    axes[0].set(title="background anchors: highest class score", ylabel="fraction of anchors")
    axes[1].set(title="positive anchors: score of the true class")
    for ax in axes:
        ax.set(xscale="log", yscale="log", xlabel="score (sigmoid)")
        ax.axvline(0.05, color="gray", ls=":", lw=1)
    fig.suptitle(_titled("Score histograms at the end of training (dotted: the 0.05 inference threshold)", context),
                 y=1.04 if context else 0.98)
    _finish(fig, axes, out / "background_scores.png", bool(finished), "no finished variant", axes[0], loc="upper left")


def write_plots(out: Path, results: list[dict], stats: dict[str, dict]) -> list[Path]:
    """Every figure of PLOTS for sorted results and their stats.json; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    colors = palette(r["variant"] for r in results)
    plot_ap_over_steps(out, results, colors)
    for knob in ("gamma", "alpha"):
        plot_ap_against(out, results, colors, knob)
    plot_loss_share(out, results, colors)
    plot_loss_cdf(out, results, stats)
    plot_loss_cdf_by_variant(out, results, stats, colors)
    plot_background_scores(out, results, stats, colors)
    return [out / p for p in PLOTS]


def _ratio_label(lab, level) -> str:
    st = lab.level_stats(level) or {}
    return f", 1 : {st['negatives_per_positive']:,.0f} anchors" if st.get("negatives_per_positive") else ""


def plot_gap_vs_imbalance(lab, cells: dict, path: Path) -> None:
    import matplotlib.ticker

    fig, axes = _panels(len(THRESHOLDS), 6.5 * len(THRESHOLDS), 4.8, sharey=True)
    colors, drawn = palette(lab.losses), False
    stats = {lv.name: lab.level_stats(lv) for lv in lab.levels}
    for ax, (key, tlabel) in zip(axes, THRESHOLDS):
        for oi, optimizer in enumerate(lab.optimizers):
            for gi, (loss, against, label) in enumerate(GAPS):
                points = []  # (ratio, mean, spread, preliminary, at the noise floor)
                for level in lab.levels:
                    g, st = gap(cells, level.name, optimizer.name, loss, against, key), stats[level.name]
                    if g is not None and st:
                        both = [cells[(level.name, optimizer.name, n)] for n in (loss, against)]
                        points.append((st["negatives_per_positive"], g["mean"], np.nan if g["spread"] is None
                                       else g["spread"], g["spread"] is None or not all(c["complete"] for c in both),
                                       g["floor"]))
                if not points:
                    continue
                xs, ys, err, weak, floor = (np.array(v) for v in zip(*sorted(points)))
                # nudged sideways on the log axis, so the lines of one level do not hide each other
                xs = xs * (1.0 + 0.04 * (oi * len(GAPS) + gi - (len(lab.optimizers) * len(GAPS) - 1) / 2))
                floor = floor.astype(bool)
                weak, full = weak.astype(bool) & ~floor, ~weak.astype(bool) & ~floor
                color, marker = colors.get(loss, "black"), "os^"[oi % 3]
                ax.errorbar(xs, np.where(floor, np.nan, ys), yerr=np.where(floor, np.nan, err), capsize=4,
                            ls=LINE_STYLES[oi % 3], color=color, label=f"{label}, {optimizer.name}")
                ax.plot(xs[full], ys[full], ls="none", marker=marker, ms=7, color=color, zorder=3)
                ax.plot(xs[floor], ys[floor], ls="none", marker="x", ms=9, mew=2, color=color, zorder=3)
                ax.plot(xs[weak], ys[weak], ls="none", marker=marker, ms=7, mfc="white", mec=color, zorder=3)
                drawn = True
        ax.axhline(0, color="gray", lw=1)
        ratios = sorted(st["negatives_per_positive"] for st in stats.values() if st)
        ax.set_xscale("log")
        ax.set_xticks(ratios, [f"{x:,.0f}" for x in ratios])  # ticks at the levels: readable on a narrow range too
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set(xlabel="negative : positive anchors (1 : x, measured)", title=f"detections with {tlabel}")
    axes[0].set_ylabel("AP difference (best-of-grid cells)")
    fig.suptitle("AP(focal) − AP(CE) and AP(Sampling-Free) − AP(CE) of the best-of-grid cells against the "
                 "imbalance, mean of the seeds\n(error bars: ± the tie rule's seed spread, a bar across 0 is a tie; "
                 "hollow: a grid not complete or one seed only, preliminary;\nx, off the line: both losses below "
                 f"{NOISE_FLOOR:g} AP, the noise floor; points nudged apart sideways)", y=1.08)
    _finish(fig, axes, path, drawn, "no finished pair of cells yet", axes[0], fontsize=8, handlelength=3.5)


def plot_ap_over_steps_best(lab, cells: dict, path: Path) -> None:
    fig, axes = _panels(len(lab.levels), 5.5 * len(lab.levels))
    colors = palette(lab.losses)
    for ax, level in zip(axes, lab.levels):
        for oi, optimizer in enumerate(lab.optimizers):
            found = [c for loss in lab.losses if (c := cells.get((level.name, optimizer.name, loss)))]
            for seed in lab.seeds:  # the first seed solid, the others hollow and fainter
                runs = [c["by_seed"][seed] for c in found if seed in c["by_seed"]]
                look = {} if seed == lab.seeds[0] else {"mfc": "white", "alpha": 0.6}
                _ap_curves(ax, runs, {r["variant"]: colors[r["loss"]] for r in runs},
                           lambda r, o=optimizer.name: f"{r['loss']} lr {r['lr']:g}, {o}, seed {r['seed']}",
                           LINE_STYLES[oi % 3], **look)
        ax.set(xlabel="training step", ylabel="validation AP", title=f"level {level.name}{_ratio_label(lab, level)}")
        ax.grid(alpha=0.3)
        if ax.lines:
            # below the panel: with every seed the legend would cover the curves
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), handlelength=4)
    fig.suptitle(f"AP over training of the best-of-grid cells, every seed (seed {lab.seeds[0]} solid, the others "
                 f"hollow; {', '.join(f'{o.name} {LINE_STYLES[i % 3]}' for i, o in enumerate(lab.optimizers))})")
    _finish(fig, [ax for ax in axes if not ax.lines], path, False, "no finished cell yet")


def plot_first_step_loss(lab, rows: list[dict], path: Path) -> None:
    first = first_step_rows(lab, rows)
    fig, (ax,) = _panels(1, 7, 4.8)
    colors = palette(lab.losses)
    stats = {lv.name: lab.level_stats(lv) or {} for lv in lab.levels}
    k = next((int(st["num_classes"]) for st in stats.values() if st.get("num_classes")), None)
    level_ratios = {n: st["negatives_per_positive"] for n, st in stats.items() if st.get("negatives_per_positive")}
    batch = {(r["level"], r["loss"]): r["measured"]["negatives"] / r["measured"]["positives"] for r in first
             if r["measured"] and r["measured"].get("positives") and "negatives" in r["measured"]}
    ratios = [*level_ratios.values(), *batch.values()]
    xs = np.geomspace(min(ratios, default=10.0) / 3, max(ratios, default=1e3) * 3, 200)
    for loss in lab.losses:
        v = lab.variant(loss)
        if k and closed_form(v, 1.0):  # a positive anchor brings K - 1 negative terms, a negative one K
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
    fig.suptitle("The classification loss before the first update, at the prior init, every optimizer and seed "
                 f"alike\n(dotted: each level's mean ratio; points: each level's first batch of seed {lab.seeds[0]};\n"
                 f"closed form over the K·x + K − 1 negative sigmoid terms a positive anchor brings, K = {k})", y=1.08)
    _finish(fig, [ax], path, True, "", ax if ax.lines else None, fontsize=8)


def write_lab_plots(lab, rows: list[dict]) -> None:
    """Every figure of the lab (the module doc) from its runs."""
    import matplotlib

    matplotlib.use("Agg")
    cells, colors = best_cells(rows, lab.grids()), palette(lab.losses)
    plot_gap_vs_imbalance(lab, cells, lab.out / "gap_vs_imbalance.png")
    plot_ap_over_steps_best(lab, cells, lab.out / "ap_over_steps_best.png")
    plot_first_step_loss(lab, rows, lab.out / "first_step_loss.png")
    for level in lab.levels:
        for optimizer in lab.optimizers:
            # focal first: the model of Figure 4
            losses = sorted(lab.losses, key=lambda n: lab.variant(n).detector["cls_loss"] != "focal")
            best = [c["run"] for n in losses if (c := cells.get((level.name, optimizer.name, n)))]
            if not best:
                continue
            folder = lab.cell_dir(level, optimizer)
            stats, by_run = load_stats(best), {r["variant"]: colors.get(r["loss"], "black") for r in best}
            context = (f"level {level.name}{_ratio_label(lab, level)}, {optimizer.name}, each loss's best-of-grid lr, "
                       f"seed {', '.join(map(str, sorted({r['seed'] for r in best})))}")
            plot_ap_over_steps(folder, best, by_run, context)
            plot_loss_cdf(folder, best, stats, context)
            plot_background_scores(folder, best, stats, by_run, context)
