"""The evaluation's error type, its one-line messages' helpers and the "no ground truth" marker."""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any

NO_GT = -1.0
"""pycocotools' marker for "no ground truth in this area range / class": not a score."""


class EvaluationError(ValueError):
    """Bad evaluation input (results, ground truth, ids); the message is one line."""


def is_no_gt(value: float | None) -> bool:
    """Whether a metric value is the "no ground truth" marker (-1, or NaN/None from elsewhere)."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == NO_GT


def json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, Mapping):
        return "an object"
    if isinstance(v, (list, tuple)):
        return "a list"
    if isinstance(v, str):
        return "a string"
    if v is None:
        return "null"
    if isinstance(v, Real):
        return "a number"
    return type(v).__name__


def is_int(v: Any) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def is_real(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


@contextlib.contextmanager
def maybe_quiet(quiet: bool):
    if quiet:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    else:
        yield
