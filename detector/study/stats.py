"""End-of-training loss statistics: where the classification loss sits among the anchors (no Lightning).

Shape symbols: N images, R anchors, K classes, P positive anchors, B background anchors.

`loss_statistics(model, loader)` runs a plain RetinaNet in float32 over collated batches, labels the anchors
with the model's own matcher (ignored anchors left out, as the loss leaves them) and returns a JSON-ready
dict: for positive and background anchors the cumulative distribution of the normalised loss (the paper's
Figure 4: each anchor's FL(p_t) = (1 - p_t)^gamma * -log(p_t) summed over its K outputs, sorted lowest
first, cumulated, divided by the total, read at FRACTIONS) for each gamma on the same probabilities and for
the trained loss's own (alpha scales a kind alike and drops out); `top_share`, the loss of the hardest 1 %
and 10 %; histograms of the background anchors' highest score and the positives' true-class score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..model.losses import anchor_labels
from ..model.matcher import BACKGROUND

GAMMAS: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 5.0)
TOP_FRACTIONS: tuple[float, ...] = (0.01, 0.1)
#: Fractions of the anchors (sorted from lowest to highest loss) at which the CDF is read: an
#: even grid, plus a fine one near 1 where the hardest negatives are.
FRACTIONS: np.ndarray = np.unique(np.round(np.concatenate([np.linspace(0, 1, 201), 1 - np.logspace(-5, -2, 31)]), 8))
#: Score histogram bin edges: 0, then 1e-6 .. 1 in 60 log-spaced steps.
SCORE_BINS: np.ndarray = np.concatenate([[0.0], np.logspace(-6, 0, 61)])
INFERENCE_SCORE = 0.05  # the paper's score threshold at inference


@torch.no_grad()
def collect_signed_logits(model, loader) -> dict[str, Any]:
    """Signed logits of the anchors that count in the loss.

    Returns {"positive": (P, K), "negative": (B, K), "positive_true": (P,), "images": n}: signed
    logits z = x where the target is 1 and -x where it is 0 (so that p_t = sigmoid(z) for every
    class output), and the true class's logit of each positive anchor. Runs `model` in eval mode,
    float32 (no autocast), on every batch of `loader`.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    positives, negatives, true_logits, seen = [], [], [], 0
    try:
        for batch in loader:
            boxes, labels, valid = (batch[k].to(device) for k in ("boxes", "labels", "valid"))
            outputs = model(batch["images"].to(device))
            logits = outputs.cls_logits.float()  # (N, R, K)
            matches = model.matcher(boxes, valid, outputs.anchors)  # (N, R)
            positive, background = matches >= 0, matches == BACKGROUND  # (N, R)
            k = logits.shape[-1]
            target = anchor_labels(matches, labels, k)[..., None] == torch.arange(k, device=device)  # (N, R, K)
            signed = torch.where(target, logits, -logits)  # (N, R, K)
            positives.append(signed[positive].cpu().numpy())
            negatives.append(signed[background].cpu().numpy())
            true_logits.append((logits * target).sum(-1)[positive].cpu().numpy())
            seen += len(boxes)
    finally:
        model.train(was_training)
    k = model.config.num_classes
    return {
        "positive": np.concatenate(positives) if positives else np.zeros((0, k), np.float32),
        "negative": np.concatenate(negatives) if negatives else np.zeros((0, k), np.float32),
        "positive_true": np.concatenate(true_logits) if true_logits else np.zeros(0, np.float32),
        "images": seen,
    }


def anchor_losses(signed: np.ndarray, gamma: float) -> np.ndarray:
    """Per-anchor focal loss (A,) of signed logits (A, K), summed over the K outputs, float64.

    FL = (1 - p_t)^gamma * -log(p_t) with p_t = sigmoid(z): written as
    exp(-gamma * softplus(z)) * softplus(-z), which stays exact for very easy examples.
    """
    z = signed.astype(np.float64)
    ce = np.logaddexp(0.0, -z)  # -log(p_t)
    loss = ce if gamma == 0 else np.exp(-gamma * np.logaddexp(0.0, z)) * ce
    return loss.sum(axis=1)


def loss_cdf(losses: np.ndarray, fractions: np.ndarray = FRACTIONS) -> np.ndarray:
    """The normalised cumulative loss at each fraction of the anchors, sorted lowest first.

    cdf(f) = (sum of the ceil(f * A) smallest losses) / (sum of all); cdf(0) = 0, cdf(1) = 1.
    Empty input (or zero total loss) gives NaN.
    """
    if len(losses) == 0 or not np.sum(losses) > 0:
        return np.full(len(fractions), np.nan)
    cum = np.cumsum(np.sort(losses))
    cum /= cum[-1]
    idx = np.ceil(np.asarray(fractions) * len(losses)).astype(np.int64) - 1  # last anchor included
    return np.where(idx < 0, 0.0, cum[np.clip(idx, 0, len(cum) - 1)])


def top_share(losses: np.ndarray, fraction: float) -> float:
    """The share of the total loss carried by the hardest `fraction` of the anchors (NaN if none)."""
    if len(losses) == 0 or not np.sum(losses) > 0:
        return float("nan")
    n = max(1, int(np.ceil(fraction * len(losses))))
    return float(np.sort(losses)[-n:].sum() / losses.sum())


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """sigmoid(z) in float64 as exp(-softplus(-z)): no overflow warning for confident logits."""
    return np.exp(-np.logaddexp(0.0, -z.astype(np.float64)))


def _rounded(values: np.ndarray, digits: int = 6) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), digits) for v in values]


def summarize(collected: dict[str, Any], *, own_gamma: float, gammas: tuple[float, ...] = GAMMAS) -> dict[str, Any]:
    """The JSON-ready statistics (see the module doc) of what `collect_signed_logits` returned."""
    pos, neg, images = collected["positive"], collected["negative"], collected["images"]
    kinds = {"positive": pos, "negative": neg}
    cdf: dict[str, dict[str, list]] = {kind: {} for kind in kinds}
    top: dict[str, dict[str, dict[str, float]]] = {kind: {} for kind in kinds}
    for gamma in sorted({*gammas, own_gamma}):
        for kind, z in kinds.items():
            losses = anchor_losses(z, gamma)
            cdf[kind][f"{gamma:g}"] = _rounded(loss_cdf(losses))
            top[kind][f"{gamma:g}"] = {f"{f:g}": round(top_share(losses, f), 6) for f in TOP_FRACTIONS}
    bg_scores = _sigmoid(-np.min(neg, axis=1)) if len(neg) else np.zeros(0)  # max_k p
    pos_scores = _sigmoid(collected["positive_true"])  # p of the true class
    quantiles = {f"{q:g}": round(float(np.quantile(bg_scores, q / 100)), 8) if len(bg_scores) else None
                 for q in (50, 99, 99.9)}
    return {
        "images": images,
        "positives": int(len(pos)),
        "negatives": int(len(neg)),
        "gammas": [float(g) for g in gammas],
        "own_gamma": float(own_gamma),
        "fractions": _rounded(FRACTIONS, 8),
        "cdf": cdf,
        "top_share": top,
        "score_bins": _rounded(SCORE_BINS, 10),
        "score_hist": {
            "background": np.histogram(bg_scores, SCORE_BINS)[0].tolist(),
            "positive": np.histogram(pos_scores, SCORE_BINS)[0].tolist(),
        },
        "background_score_quantiles": quantiles,
        "background_above_inference_score_per_image": (
            round(float(np.sum(bg_scores >= INFERENCE_SCORE)) / images, 3) if images else None
        ),
        "positive_score_median": round(float(np.median(pos_scores)), 6) if len(pos_scores) else None,
    }


def loss_statistics(model, loader, *, own_gamma: float = 0.0, gammas: tuple[float, ...] = GAMMAS) -> dict[str, Any]:
    """Run `model` over `loader` (the images to measure) and summarise (see the module doc)."""
    return summarize(collect_signed_logits(model, loader), own_gamma=own_gamma, gammas=gammas)
