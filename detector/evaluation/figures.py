"""The report's figures (matplotlib, no pyplot: no global backend is chosen for the caller).

Each ``*_figure`` function takes the numbers of report.json's sections and returns a Figure;
`save_png` writes one, `figure_to_array` renders one for an image logger.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .tide import ERROR_NAMES, ERROR_TYPES

ERROR_COLORS: dict[str, str] = {
    "cls": "#e6194b", "loc": "#f58231", "both": "#911eb4", "dupe": "#f032e6", "bkg": "#ffd60a", "miss": "#4363d8",
}
"""One colour per TIDE error type, shared by the error chart and the gallery's boxes."""
TRUE_POSITIVE_COLOR = "#3cb44b"
GROUND_TRUTH_COLOR = "#ffffff"

_MAX_ANNOTATED_CLASSES = 25  # past this many classes the cells are too small for numbers


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def pr_figure(curves: Mapping[str, Any], class_names: Sequence[str], aps: Sequence[Mapping[str, Any]]) -> Figure:
    """Precision against recall per class, at IoU 0.5 (left) and averaged over 0.5:0.95 (right)."""
    fig = _new_figure(11, 4.6)
    recall = np.asarray(curves["recall"])
    for ax, key, title, ap_key in ((fig.add_subplot(1, 2, 1), "iou50", "IoU 0.5", "AP50"),
                                   (fig.add_subplot(1, 2, 2), "iou50_95", "mean over IoU 0.5:0.95", "AP")):
        for name, p, row in zip(class_names, curves[key], aps):
            if p is not None:
                ax.plot(recall, p, lw=1.3, label=f"{name} ({_num(row[ap_key])})")
        defined = [p for p in curves[key] if p is not None]
        if len(defined) > 1:
            ax.plot(recall, np.mean(defined, axis=0), color="black", lw=2.5, label="mean over classes")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=f"Precision-recall, {title}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right", title=ap_key, title_fontsize=7)
    return fig


def score_figure(score: Mapping[str, Any], class_names: Sequence[str]) -> Figure:
    """Precision, recall and F1 against the score threshold, per class and pooled, the best-F1
    threshold of the pooled curve marked."""
    fig = _new_figure(13, 3.9)
    thr = np.asarray(score["thresholds"], dtype=float)
    best = score["overall"]["best"]
    for i, (key, label) in enumerate((("precision", "precision"), ("recall", "recall"), ("f1", "F1"))):
        ax = fig.add_subplot(1, 3, i + 1)
        for name in class_names:
            ax.plot(thr, _arr(score["per_class"][name][key]), lw=1, alpha=0.8, label=name)
        ax.plot(thr, _arr(score["overall"][key]), color="black", lw=2.5, label="all classes")
        if best is not None:
            ax.axvline(best["threshold"], color="gray", ls="--", lw=1)
            ax.annotate(f"best F1 at {best['threshold']:.3f}", (best["threshold"], 0.03), fontsize=8,
                        xytext=(4, 0), textcoords="offset points", color="dimgray")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="score threshold", ylabel=label, title=f"{label} vs score")
        ax.grid(alpha=0.3)
        if i == 2:
            ax.legend(fontsize=7, loc="upper right")
    return fig


def confusion_figure(counts: np.ndarray, normalised: np.ndarray, labels: Sequence[str], threshold: float) -> Figure:
    """The confusion matrix: counts (left) and row-normalised (right); rows ground truth."""
    n = len(labels)
    side = min(max(3.2, 0.45 * n + 1.8), 14)
    fig = _new_figure(2 * side + 1, side)
    for i, (data, title, fmt) in enumerate(((counts, "counts", "{:.0f}"), (normalised, "row-normalised", "{:.2f}"))):
        ax = fig.add_subplot(1, 2, i + 1)
        shown = np.log1p(data) if i == 0 else np.nan_to_num(data)
        im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=(shown.max() or 1) if i == 0 else 1)
        ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        ax.set(xlabel="detected class", ylabel="ground-truth class",
               title=f"Confusion matrix, {title} (score >= {threshold:.3f}, IoU >= 0.5)")
        ax.title.set_fontsize(9)
        if n <= _MAX_ANNOTATED_CLASSES:
            top = shown.max() or 1
            for r in range(n):
                for c in range(n):
                    v = data[r, c]
                    if not np.isnan(v):
                        ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=7,
                                color="white" if shown[r, c] > 0.6 * top else "black")
        if i == 1:
            fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def tide_figure(tide: Mapping[str, Any]) -> Figure:
    """AP gained by fixing each error type (left) and the count of each (right)."""
    fig = _new_figure(10, 3.2)
    names = [ERROR_NAMES[t] for t in ERROR_TYPES]
    colors = [ERROR_COLORS[t] for t in ERROR_TYPES]
    y = np.arange(len(ERROR_TYPES))
    for i, (key, title) in enumerate((("delta_ap", "AP50 gained by fixing it (TIDE)"), ("counts", "count"))):
        ax = fig.add_subplot(1, 2, i + 1)
        values = [tide[key][t] for t in ERROR_TYPES]
        ax.barh(y, values, color=colors, edgecolor="black", lw=0.5)
        ax.set_yticks(y, names if i == 0 else [""] * len(y))
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        for yy, v in zip(y, values):
            ax.text(v, yy, f" {v:.3f}" if key == "delta_ap" else f" {v}", va="center", fontsize=8)
        ax.margins(x=0.25)
        ax.grid(axis="x", alpha=0.3)
    return fig


def save_png(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def figure_to_array(fig: Figure) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of the rendered figure."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _arr(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
