"""The one input error of the data package, and counted warnings.

Bad input is handled in one of two ways, and each case is documented where it happens:

- an error, `DatasetError`, whose message starts with the offending file, for anything that
  makes a file unusable (missing or undecodable image, malformed JSON or XML, an unknown
  category, a file_name that escapes the image root, a missing image-set file);
- a counted warning, for problems where skipping one box is the documented choice (a box of
  zero or negative size, a box outside its image). `IssueCounter` counts them while a dataset
  is indexed and emits one `DatasetWarning` summarising all of them, never one per box.

Scripts catch `DatasetError` and print one line, `error: <message>`, with exit status 2.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter


class DatasetError(ValueError):
    """Input that cannot be used; the message names the offending file first.

    Args:
        path: the file (or folder) at fault.
        message: what is wrong with it, in words.
    """

    def __init__(self, path: str | os.PathLike, message: str | None = None) -> None:
        if message is None:  # one argument: a DataLoader worker's error re-raised (see _from_worker)
            path, message = _from_worker(str(path))
        self.path = os.fspath(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}")


def _from_worker(text: str) -> tuple[str, str]:
    """(path, message) of a DatasetError that a DataLoader worker raised.

    torch re-raises a worker's exception in the main process as ``type(err)(text)``, text being
    "Caught DatasetError in DataLoader worker process 0. Original Traceback ...", whose last line is
    "detector.data.errors.DatasetError: <path>: <message>". Keeping only that last line makes the
    error the worker raised, so that scripts print it as one line.
    """
    last = text.strip().splitlines()[-1] if text.strip() else text
    marker = "DatasetError: "
    if marker in last:
        last = last.split(marker, 1)[1]
    path, sep, message = last.partition(": ")
    return (path, message) if sep else ("", last)


class DatasetWarning(UserWarning):
    """A summary of the input problems a dataset skipped or repaired while it was indexed."""


class IssueCounter:
    """Counts repairable problems per kind and reports them once.

    Example:
        issues = IssueCounter("instances_val2017.json")
        issues.add("box of zero or negative size (dropped)", 3)
        issues.warn_summary()   # one DatasetWarning listing every kind with its count
    """

    def __init__(self, source: str | os.PathLike) -> None:
        self.source = os.fspath(source)
        self.counts: Counter[str] = Counter()

    def add(self, kind: str, count: int = 1) -> None:
        if count:
            self.counts[kind] += int(count)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def summary(self) -> str:
        parts = [f"{n} x {kind}" for kind, n in sorted(self.counts.items())]
        return f"{self.source}: " + "; ".join(parts)

    def warn_summary(self) -> None:
        """Emit one `DatasetWarning` with every counted problem (nothing when there was none)."""
        if self.counts:
            warnings.warn(self.summary(), DatasetWarning, stacklevel=3)
