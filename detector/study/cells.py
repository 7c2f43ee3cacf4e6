"""The imbalance lab's comparisons: each loss's best-of-grid cell, and the gap between two cells.

A cell is one (level, optimizer, loss): its best lr on the grid (`best_of_grid`, the one rule the seeds stage
and the report share), that lr's runs at every seed, and the recipe-lr run beside it. A gap is AP(loss) -
AP(against) of two best cells per common seed; a *tie* when its size is not larger than the seed spread (the
larger of the two losses' AP ranges over the seeds); "one seed" without a spread; "noise floor" when both
cells stay below NOISE_FLOOR AP, whatever the sign.
"""

from __future__ import annotations

import math

import numpy as np

from .variants import split_name

#: The comparisons of the gap figure: (loss, against), by their study names.
FOCAL, CE, SAMPLING_FREE = "focal_g2_a0.25", "ce_prior", "sampling_free"
GAPS: tuple[tuple[str, str, str], ...] = ((FOCAL, CE, "focal − CE"), (SAMPLING_FREE, CE, "Sampling-Free − CE"))
THRESHOLDS = (("AP", "score ≥ 0.05"), ("AP_low", "score ≥ 0.001"))
#: Mean AP below which a cell has not left the noise floor (one AP point).
NOISE_FLOOR = 0.01


def run_ap(r: dict | None, key: str = "AP") -> float | None:
    """A run's AP (a diverged run scores 0 in the comparisons; None: not run)."""
    if r is None:
        return None
    if r.get("diverged"):
        return 0.0
    v = r.get(key)
    return None if v is None else float(v)


def best_cells(rows: list[dict], lrs: dict[tuple[str, str], tuple[float, ...]] | None = None) -> dict[tuple, dict]:
    """{(level, optimizer, loss): cell}: the best grid lr (first seed's AP at 0.05), its run at the first seed
    ("run") and its runs by seed.

    lrs: {(level, optimizer): grid}. A run at an lr outside its grid (a pilot, an older grid) is
    not a candidate, and a cell is complete when every lr of its grid ran. None: every lr seen is
    the grid.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["level"], r["optimizer"], r["loss"]), []).append(r)
    cells = {}
    for key, runs in groups.items():
        wanted = lrs.get(key[:2]) if lrs else None
        grid = {r["lr"]: r for r in runs
                if _is_grid(r) and (wanted is None or any(math.isclose(r["lr"], lr) for lr in wanted))}
        if not grid:
            continue
        first = next(iter(grid.values()))["seed"]
        complete = wanted is None or all(any(math.isclose(lr, g) for g in grid) for lr in wanted)
        best_lr = best_of_grid(grid)
        by_seed = {first: grid[best_lr]}
        by_seed.update({r["seed"]: r for r in runs if r["seed"] != first and math.isclose(r["lr"], best_lr)})
        recipe = next((r for r in grid.values() if r.get("recipe")), None)
        edge = complete and len(grid) > 1 and (math.isclose(best_lr, min(grid)) or math.isclose(best_lr, max(grid)))
        cells[key] = {"lr": best_lr, "run": grid[best_lr], "by_seed": by_seed, "recipe": recipe, "complete": complete,
                      "edge": edge}
    return cells


def best_of_grid(grid: dict[float, dict]) -> float:
    """The best lr of {lr: run}: highest AP (diverged: 0, not run or no AP: below 0); a finished run beats
    a diverged one at the same AP; then the smaller lr."""
    def rank(lr: float) -> tuple:
        ap = run_ap(grid[lr])
        return (-1.0 if ap is None else ap, not grid[lr].get("diverged"), -lr)

    return max(grid, key=rank)


def _is_grid(r: dict) -> bool:
    """A grid run: `<loss>+lr<V>` without a seed modifier."""
    return "seed" not in split_name(r["variant"])[1]


def gap(cells: dict[tuple, dict], level: str, optimizer: str, loss: str, against: str, key: str = "AP") -> dict | None:
    """AP(loss) - AP(against) of two best cells: per common seed, mean, seed spread, noise floor, tie verdict."""
    a, b = cells.get((level, optimizer, loss)), cells.get((level, optimizer, against))
    if a is None or b is None:
        return None
    aps = [{s: run_ap(c["by_seed"][s], key) for s in sorted(set(a["by_seed"]) & set(b["by_seed"]))} for c in (a, b)]
    seeds = [s for s in aps[0] if aps[0][s] is not None and aps[1][s] is not None]
    if not seeds:
        return None
    per_seed = {s: aps[0][s] - aps[1][s] for s in seeds}
    mean = float(np.mean(list(per_seed.values())))
    spread = max(max(ap[s] for s in seeds) - min(ap[s] for s in seeds) for ap in aps) if len(seeds) > 1 else None
    floor = max(float(np.mean([ap[s] for s in seeds])) for ap in aps) < NOISE_FLOOR
    if floor:
        verdict = "noise floor"
    elif spread is None:
        verdict = "one seed"
    else:
        verdict = "tie" if abs(mean) <= spread else ("ahead" if mean > 0 else "behind")
    return {"per_seed": per_seed, "mean": mean, "spread": spread, "floor": floor, "verdict": verdict}


__all__ = ["GAPS", "NOISE_FLOOR", "THRESHOLDS", "best_cells", "best_of_grid", "gap", "run_ap"]
