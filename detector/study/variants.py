"""The variants of a loss study: data in the preset (`study.losses`), a name for each setting.

A preset's `losses:` maps each loss name to the `model.detector` keys it sets (cls_loss, gamma,
alpha, prior_prob, ohem_neg_pos_ratio, guided_loss_scaling; prior_prob defaults to the paper's
0.01, `prior_prob: data` takes the study's measured foreground fraction, as Sampling-Free does)
and `paper_ap`, the paper's Table 1 AP (percent) for the same loss where it has one.

A departure from the recipe is a labelled row, a suffix after `+`: `+lr<V>` (base lr V at the
reference batch), `+seed<S>` (seed_everything S), `+clip<V>` (gradient clipping at norm V); e.g.
`ce_prior+lr0.002+seed1`, `focal_g2_a0.25+clip10`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

PRIOR_PROB = 0.01
#: The suffixes of a labelled row and the type of their value.
MODIFIERS: dict[str, type] = {"lr": float, "seed": int, "clip": float}


class VariantError(ValueError):
    """A variant the preset does not define, or a suffix that is not one of MODIFIERS."""


@dataclass(frozen=True)
class Variant:
    """One row of a study: a loss of the preset (`detector`: its model.detector keys) and its labelled departures."""

    name: str
    base_name: str
    detector: dict = field(compare=False)
    table_ap: float | None = None  # the paper's Table 1 AP (%) of the base loss
    lr: float | None = None
    seed: int | None = None
    clip: float | None = None

    @property
    def prior_from_data(self) -> bool:
        return self.detector["prior_prob"] == "data"

    def paper_ap(self) -> float | None:
        """The paper's AP for this row: only a row that keeps the recipe (no `+` departure) has one."""
        return self.table_ap if self.name == self.base_name else None

    def row(self) -> dict[str, Any]:
        """The descriptive columns of the results table."""
        d = self.detector
        loss = "sampling_free" if d.get("guided_loss_scaling") else d["cls_loss"]
        return {"variant": self.name, "loss": loss, "gamma": d["gamma"], "alpha": d["alpha"],
                "prior_init": d["prior_prob"] is not None}


def _fmt(x: float) -> str:
    """0.5 -> '0.5', 2.0 -> '2', 1e30 -> '1e30': short, reads back equal, never holds a '+'."""
    return (f"{x:g}" if float(f"{x:g}") == x else repr(x)).replace("e+", "e").replace("e-0", "e-")


def split_name(name: str) -> tuple[str, dict[str, Any]]:
    """(base name, {modifier: value}) of a variant name; raises VariantError on an unknown suffix."""
    base, *mods = name.strip().split("+")
    values: dict[str, Any] = {}
    for mod in mods:
        m = re.fullmatch(r"([a-z]+)(\d+(?:\.\d*)?(?:e[-+]?\d+)?)", mod)
        if m is None or m.group(1) not in MODIFIERS:
            raise VariantError(f"{name}: unknown modifier +{mod} (known: {', '.join(f'+{k}<V>' for k in MODIFIERS)})")
        values[m.group(1)] = MODIFIERS[m.group(1)](float(m.group(2)))
    return base, values


def parse_variant(name: str, losses: dict[str, dict]) -> Variant:
    """The Variant `name` stands for, its loss taken from a preset's `losses:` mapping."""
    from ..model import RetinaNetConfig

    base, mods = split_name(name)
    if base not in losses:
        raise VariantError(f"unknown variant {base!r} (the preset's study.losses: {', '.join(losses)})")
    spec = dict(losses[base] or {})
    table_ap = spec.pop("paper_ap", None)
    unknown = sorted(set(spec) - {f.name for f in fields(RetinaNetConfig)})
    if unknown or "cls_loss" not in spec:
        raise VariantError(f"study.losses.{base}: needs cls_loss; unknown model.detector keys {unknown}")
    alpha = spec.pop("alpha", None)
    detector = {"cls_loss": spec.pop("cls_loss"), "gamma": float(spec.pop("gamma", 0.0)),
                "alpha": None if alpha is None else float(alpha), "prior_prob": spec.pop("prior_prob", PRIOR_PROB),
                **spec}  # fmt: skip
    canonical = "+".join([base, *(f"{k}{v if k == 'seed' else _fmt(v)}" for k, v in mods.items())])
    return Variant(name=canonical, base_name=base, detector=detector, table_ap=table_ap, **mods)


def parse_variants(names: str | list[str], losses: dict[str, dict]) -> list[Variant]:
    """Variants from a comma-separated string or a list ("all": every loss of the preset); no duplicates."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    expanded = [x for n in names for x in (losses if n.strip() == "all" else [n])]
    variants = [parse_variant(n, losses) for n in expanded]
    seen = [v.name for v in variants]
    twice = sorted({n for n in seen if seen.count(n) > 1})
    if twice or not variants:
        raise VariantError(f"variant {', '.join(twice)} is listed twice" if twice else "no variant given")
    return variants


__all__ = ["MODIFIERS", "PRIOR_PROB", "Variant", "VariantError", "parse_variant", "parse_variants", "split_name"]
