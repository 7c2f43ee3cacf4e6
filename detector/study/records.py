"""The study's record files: CSV tables written atomically (detector.io) and read back.

A run's train.csv and val.csv (written by the recorder), results.csv (the report), read by the
runner and the plots. No Lightning here: the report and the lab read records without it.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from ..io import write_atomic

#: The COCO numbers a study's tables carry for each run (pycocotools' first six).
METRICS: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def write_csv(path: str | os.PathLike, rows: list[dict], columns: list[str]) -> None:
    """rows as a CSV table with these columns (other keys ignored), atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buf.getvalue())


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
    if not rows:
        return {}
    return {k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows]) for k in rows[0]}


__all__ = ["METRICS", "read_columns", "read_rows", "write_atomic", "write_csv"]
