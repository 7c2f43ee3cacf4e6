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

The paper's Table 1 numbers (COCO minival AP in percent, ResNet-50-FPN, 600 px) are drawn on a
second axis of the AP-against-gamma/alpha plots for the shape, never on the same scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_path
from .records import read_columns
from .variants import PAPER_ALPHA_FOR_GAMMA, PAPER_AP_ALPHA_CE, PAPER_AP_FOCAL, parse_variant

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
        v = parse_variant(r["variant"])
        focal_or_alpha_ce = v.cls_loss == "focal" or (v.cls_loss == "ce" and v.alpha is not None)
        if v.modifiers or not v.prior_init or not focal_or_alpha_ce:
            continue
        rows.append((v.gamma, v.alpha, r))
    paper_rows = sorted(((g, a, r) for g, a, r in rows if PAPER_ALPHA_FOR_GAMMA.get(g) == a and not r.get("diverged")),
                        key=lambda t: (t[0], t[2]["variant"]))
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
    twin = _paper_axis(ax, list(PAPER_AP_FOCAL), list(PAPER_AP_FOCAL.values()), "paper Table 1b (best alpha)")
    handles = ax.get_legend_handles_labels()
    h2 = twin.get_legend_handles_labels()
    ax.legend(handles[0] + h2[0], handles[1] + h2[1], fontsize=7, loc="lower center")
    save_figure(fig, out / "ap_vs_gamma.png")


def plot_ap_vs_alpha(out: Path, results: list[dict], colors: dict) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = []
    for r in results:
        v = parse_variant(r["variant"])
        if v.modifiers or not v.prior_init or v.gamma != 0 or v.alpha is None or v.cls_loss == "ohem":
            continue
        points.append((v.alpha, r))
    alphas = sorted({*PAPER_AP_ALPHA_CE, *(a for a, _ in points)})
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
    twin = _paper_axis(ax, [pos[a] for a in PAPER_AP_ALPHA_CE], list(PAPER_AP_ALPHA_CE.values()), "paper Table 1a")
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
    for name in finished:
        v = parse_variant(name)
        if v.cls_loss == "focal" and v.gamma == 2 and not v.modifiers:
            return name
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


__all__ = ["PLOTS", "PLOT_TITLES", "plot_ap_over_steps", "plot_background_scores", "plot_loss_cdf", "save_figure",
           "variant_colors", "write_plots"]
