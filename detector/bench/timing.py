"""Side-by-side timing: the only kind of speed measurement this project trusts.

The machines the benchmark runs on are shared and noisy, so an absolute time says little. What
is stable is a ratio taken in one run with the contenders interleaved: every round runs each
function once (the order rotates from round to round so that neither side always goes first),
and a ratio is the median over rounds of the per-round ratio. Medians of the raw times are
reported too.

On CUDA every call is bracketed by `torch.cuda.synchronize()`.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping

import torch


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued CUDA work on `device` (a no-op on CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device | str | None = None) -> float:
    """Seconds one call of `fn` takes, synchronising CUDA before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


class Interleaved:
    """Times of several functions measured in alternation.

    Args:
        fns: name -> zero-argument callable; each is called once per round.
        rounds: measured rounds.
        warmup: unmeasured rounds first (allocator, oneDNN primitive caches, autotuning).
        device: synchronised around each call when it is a CUDA device.
        min_seconds: keep adding rounds (up to `max_rounds`) until this much time has been measured.
        max_rounds: upper bound on the rounds when `min_seconds` asks for more.
    """

    def __init__(
        self, fns: Mapping[str, Callable[[], object]], *, rounds: int = 5, warmup: int = 1,
        device: torch.device | str | None = None, min_seconds: float = 0.0, max_rounds: int | None = None,
    ) -> None:
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        self.names = list(fns)
        self.times: dict[str, list[float]] = {name: [] for name in self.names}
        fn_list = [fns[name] for name in self.names]
        for _ in range(warmup):
            for fn in fn_list:
                fn()
        synchronize(device)
        max_rounds = max(rounds, max_rounds or rounds)
        total, r = 0.0, 0
        while r < rounds or (total < min_seconds and r < max_rounds):
            shift = r % len(fn_list)  # rotate who goes first
            for k in range(len(fn_list)):
                i = (k + shift) % len(fn_list)
                gc.collect()
                t = time_call(fn_list[i], device)
                self.times[self.names[i]].append(t)
                total += t
            r += 1

    @property
    def rounds(self) -> int:
        return len(self.times[self.names[0]])

    def median(self, name: str) -> float:
        return statistics.median(self.times[name])

    def ratio(self, slower: str, faster: str) -> float:
        """Median over rounds of time[slower] / time[faster]: > 1 when `faster` is faster."""
        return statistics.median(a / b for a, b in zip(self.times[slower], self.times[faster]))

    def spread(self, name: str) -> float:
        """(max - min) / median of one function's times: how noisy the run was."""
        t = self.times[name]
        return (max(t) - min(t)) / statistics.median(t)

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            name: {"median_s": self.median(name), "min_s": min(self.times[name]), "spread": self.spread(name)}
            for name in self.names
        }

