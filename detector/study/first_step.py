"""The classification loss at the first step: the closed form at the prior init, and what the runs measured.

At the prior init every sigmoid output is p = pi; per positive anchor the loss is one positive term
alpha (1 - p)^gamma * -log(p) and `neg_terms_per_pos` negative terms (1 - alpha) p^gamma * -log(1 - p):
plain CE grows linearly with the imbalance, focal loss hardly moves. `first_step_rows` sets it beside the
first row of each recipe run's train.csv, at the level's mean ratio and at that batch's own.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..check_data import neg_terms_per_pos
from .records import read_rows
from .variants import Variant


def loss_at_prior(neg_terms_per_pos: float, prior: float, gamma: float = 0.0,
                  alpha: float | None = None) -> tuple[float, float]:
    """(classification loss per positive anchor, negatives' share of it) when every output is p = prior."""
    w_pos, w_neg = (1.0, 1.0) if alpha is None else (alpha, 1.0 - alpha)
    positive = w_pos * (1.0 - prior) ** gamma * -math.log(prior)
    negative = neg_terms_per_pos * w_neg * prior**gamma * -math.log1p(-prior)
    return positive + negative, negative / (positive + negative)


def closed_form(variant: Variant, neg_terms: float | None) -> tuple[float, float] | None:
    """`loss_at_prior` for CE or focal loss with a fixed prior (the losses it describes); None for the others."""
    d = variant.detector
    if d["cls_loss"] not in ("ce", "focal") or d["prior_prob"] in (None, "data") or d.get("guided_loss_scaling"):
        return None
    return None if neg_terms is None else loss_at_prior(neg_terms, d["prior_prob"], d["gamma"], d["alpha"])


def first_row(train_csv: Path) -> dict[str, float] | None:
    """loss_cls, neg_loss_share, positives and negatives (anchors an image) of a run's first logged step."""
    rows = read_rows(train_csv)
    if not rows or rows[0].get("loss_cls") in (None, ""):
        return None
    keys = ("loss_cls", "neg_loss_share", "positives", "negatives")
    return {k: float(rows[0][k]) for k in keys if rows[0].get(k) not in (None, "")}


def first_step_rows(lab, runs: list[dict]) -> list[dict]:
    """Per level and loss: the closed form (None where the loss has no fixed prior) and the measured first step.

    The measured values come from the first optimizer with a finished recipe-lr run of the loss (its
    lowest seed); before the first update the optimizer and the lr do not matter.
    """
    out = []
    for level in lab.levels:
        stats = lab.level_stats(level) or {}
        ratio, k = stats.get("negative_terms_per_positive_term"), stats.get("num_classes")
        for loss in lab.losses:
            v = lab.variant(loss)
            measured = None
            for optimizer in lab.optimizers:
                recipe_runs = sorted((r for r in runs if r["level"] == level.name and r["optimizer"] == optimizer.name
                                      and r["loss"] == loss and r["recipe"]), key=lambda r: r["seed"])
                if recipe_runs:
                    measured = first_row(recipe_runs[0]["folder"] / "train.csv")
                if measured is not None:
                    break
            batch_ratio = None
            if measured and k and measured.get("positives"):
                batch_ratio = neg_terms_per_pos(measured["positives"], measured.get("negatives", 0.0), int(k))
            out.append({"level": level.name, "loss": loss, "ratio_term": ratio, "batch_ratio_term": batch_ratio,
                        "closed": closed_form(v, ratio), "closed_batch": closed_form(v, batch_ratio),
                        "measured": measured})
    return out


__all__ = ["closed_form", "first_row", "first_step_rows", "loss_at_prior"]
