"""The evaluation's error type, its one-line messages' helpers and the "no ground truth" marker."""

from __future__ import annotations

import contextlib
import io
import math

NO_GT = -1.0
"""pycocotools' marker for "no ground truth in this area range / class": not a score."""


class EvaluationError(ValueError):
    """Bad evaluation input (results, ground truth, ids); the message is one line."""


def is_no_gt(value: float | None) -> bool:
    """Whether a metric value is the "no ground truth" marker (-1, or NaN/None from elsewhere)."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == NO_GT


@contextlib.contextmanager
def maybe_quiet(quiet: bool):
    if quiet:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    else:
        yield
