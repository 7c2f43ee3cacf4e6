"""Readable forms of the COCO metrics dict: markdown tables and a strict JSON file."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .coco import COCO_METRIC_NAMES, is_no_gt

# (IoU, area, maxDets) of each of the 12 numbers, as pycocotools' summary names them.
METRIC_SETTINGS: dict[str, tuple[str, str, int]] = {
    "AP": ("0.50:0.95", "all", 100),
    "AP50": ("0.50", "all", 100),
    "AP75": ("0.75", "all", 100),
    "APs": ("0.50:0.95", "small", 100),
    "APm": ("0.50:0.95", "medium", 100),
    "APl": ("0.50:0.95", "large", 100),
    "AR1": ("0.50:0.95", "all", 1),
    "AR10": ("0.50:0.95", "all", 10),
    "AR100": ("0.50:0.95", "all", 100),
    "ARs": ("0.50:0.95", "small", 100),
    "ARm": ("0.50:0.95", "medium", 100),
    "ARl": ("0.50:0.95", "large", 100),
}


def format_metrics_table(metrics: Mapping[str, Any], class_names: Sequence[str] | None = None) -> str:
    """Markdown tables of an `evaluate_coco` result.

    The first table lists the 12 numbers with their IoU, area range and maxDets; a second one,
    when ``metrics`` has "per_class", lists the AP of each class: those of ``class_names`` in
    that order if given (a name without an entry shows "n/a"), else all in the dict's order.
    Values are on the 0-1 scale with 3 decimals; "n/a" marks the no-ground-truth value (-1).
    """
    lines = ["| Metric | IoU | Area | MaxDets | Value |", "|---|---|---|---|---:|"]
    for name in COCO_METRIC_NAMES:
        if name in metrics:
            iou, area, max_dets = METRIC_SETTINGS[name]
            lines.append(f"| {name} | {iou} | {area} | {max_dets} | {_fmt(metrics[name])} |")
    per_class = metrics.get("per_class")
    if per_class is not None:
        names = list(class_names) if class_names is not None else list(per_class)
        lines += ["", "| Class | AP |", "|---|---:|"]
        lines += [f"| {_escape(n)} | {_fmt(per_class.get(n))} |" for n in names]
    return "\n".join(lines)


def save_metrics(metrics: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write the metrics dict as strict JSON (parent folders created); returns the path.

    Raises ValueError (from ``json``) on NaN or inf, which `evaluate_coco` never produces.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def _fmt(value: Any) -> str:
    if is_no_gt(value) or (isinstance(value, float) and math.isinf(value)):
        return "n/a"
    return f"{float(value):.3f}"


def _escape(name: str) -> str:
    return str(name).replace("|", "\\|")
