"""The study's record files, read back (no Lightning here): a run's train.csv, val.csv, stats.json and
result.json, a folder's study.json / lab.json; CSV text; the code's commit."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

#: The COCO numbers a study's tables carry for each run (pycocotools' first six).
METRICS: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")
#: The final losses are the mean of the last this-many training steps.
FINAL_LOSS_WINDOW = 20


def csv_text(columns: tuple[str, ...] | list[str], rows: list[dict], cell=lambda column, value: value,
             lineterminator: str = "\n") -> str:
    """rows as CSV text with these columns (other keys ignored), each value written as `cell(column, value)`."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=lineterminator)
    writer.writerow(columns)
    writer.writerows([cell(c, r.get(c)) for c in columns] for r in rows)
    return buf.getvalue()


def read_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a CSV table as dicts of strings ([] when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_columns(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A numeric CSV table as {column: float array}, empty cells NaN ({} for a missing or empty file)."""
    rows = read_rows(path)
    return {k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows]) for k in rows[0]} if rows else {}


def final_losses(run_dir: Path) -> dict[str, float | None]:
    """final_loss_cls and final_loss_box of a run: the mean of its last FINAL_LOSS_WINDOW steps in train.csv."""
    rows = read_rows(run_dir / "train.csv")
    out: dict[str, float | None] = {}
    for key in ("loss_cls", "loss_box"):
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "")][-FINAL_LOSS_WINDOW:]
        out[f"final_{key}"] = round(sum(values) / len(values), 5) if values else None
    return out


def load_results(out: str | os.PathLike) -> list[dict[str, Any]]:
    """Every finished variant's result.json in an output folder, with its run's "folder" (runs/<variant>)."""
    results = []
    for path in sorted(Path(out).glob("runs/*/result.json")):
        try:
            results.append({**json.loads(path.read_text(encoding="utf-8")), "folder": path.parent})
        except (OSError, json.JSONDecodeError):
            continue  # being written by another shard: atomic replace makes this rare
    return results


def recorded_commands(path: Path) -> list[str]:
    """The "commands" list of a JSON record file (study.json, lab.json); [] when it has none."""
    try:
        return list(json.loads(Path(path).read_text(encoding="utf-8")).get("commands", []))
    except (OSError, json.JSONDecodeError):
        return []


def code_version(where: str | os.PathLike = Path(__file__).parent) -> dict[str, Any]:
    """{"commit": the HEAD commit of the git checkout holding `where`, "dirty": whether tracked files outside
    docs/ differ from it}; both None outside a git checkout (an installed wheel) or without git. docs/ holds what
    the study writes itself (lab.json gains the command before a run trains); what a run reads from there is the
    study's own output, recorded in the run's config.yaml."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)docs") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def load_stats(results: list[dict]) -> dict[str, dict]:
    """{variant: its run folder's stats.json} for the results (of `load_results`) that have one."""
    paths = {r["variant"]: r["folder"] / "stats.json" for r in results}
    return {v: json.loads(p.read_text(encoding="utf-8")) for v, p in paths.items() if p.is_file()}
