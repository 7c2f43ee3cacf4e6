"""The loss study's table, from the files the runner and the recorder wrote; the plots beside it.

`write_tables(out, results)`: results.csv and results.md, one row per variant, columns
RESULT_COLUMNS. `write_report(out, results)`: the tables and every plot (detector.study.plots).
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from .folder import recorded_commands
from .plots import PLOT_TITLES, write_plots
from .records import FINAL_LOSS_WINDOW, METRICS, load_stats, write_atomic

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


def sort_results(results: list[dict]) -> list[dict]:
    return sorted(results, key=_order)


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
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    for r in sort_results(results):
        writer.writerow([_cell(c, r.get(c), 4 if c in METRICS else 4 if c.startswith("final") else 2)
                         for c in RESULT_COLUMNS])
    return buffer.getvalue()


def results_markdown(results: list[dict], study=None, stats: dict[str, dict] | None = None) -> str:
    rows = sort_results(results)
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
    """The path relative to the working directory when it lies under it (tables name no home folders)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def write_tables(out: str | os.PathLike, results: list[dict], study=None) -> None:
    """results.csv and results.md (atomically)."""
    out = Path(out)
    write_atomic(out / "results.csv", results_csv(results))
    write_atomic(out / "results.md", results_markdown(results, study, load_stats(out, results)))


def write_report(out: str | os.PathLike, results: list[dict], study=None) -> list[Path]:
    """The tables and every plot (detector.study.plots); returns the files written."""
    out = Path(out)
    results = sort_results(results)
    write_tables(out, results, study)
    return [out / "results.csv", out / "results.md", *write_plots(out, results, load_stats(out, results))]


__all__ = ["RESULT_COLUMNS", "results_csv", "results_markdown", "sort_results", "write_report", "write_tables"]
