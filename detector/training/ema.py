"""An exponential moving average (EMA) of the weights, validated and saved in their place.

The rule is Ultralytics' `ModelEMA` (ultralytics/utils/torch_utils.py: ``d = decay * (1 -
exp(-updates / tau))``, tau 2000 there), over every floating-point parameter and buffer
(BatchNorm's running statistics too; integer buffers take the current value). After optimizer
step k = 1, 2, ... with weights w_k:

    ema_1 = w_1
    ema_k = d_k * ema_(k-1) + (1 - d_k) * w_k,   d_k = decay * (1 - exp(-(k - 1) / tau))

so the decay warms up from 0 towards `decay` over about tau steps and the average does not hold
on to the random initial weights. (Ultralytics starts the average at the initial weights and
counts k from there; its first update, at d = decay / tau or so, is nearly the copy made here.)

The machinery is Lightning's public `WeightAveraging` callback over
`torch.optim.swa_utils.AveragedModel`, with torch's `get_ema_multi_avg_fn` doing each update at
d_k. The callback swaps the average into the model for every validation, and writes checkpoints
with the average as "state_dict" (what `detector.load_detector`, and so predict, evaluate and
export, read), the raw weights as "current_model_state" and the update count as
"averaging_state"; resuming loads all three back (and the callback's last updated step, under
"callbacks"), so a resumed run continues the same average. Every process of a DDP run keeps its
own copy, equal on all of them since the weights are. After `fit` the model holds the average.
"""

from __future__ import annotations

import math
import warnings

import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn

#: Where a checkpoint written with the average on keeps the raw weights (WeightAveraging's name).
RAW_WEIGHTS_KEY = "current_model_state"


def check_ema_settings(decay: float | None, tau: float) -> None:
    """ValueError naming the setting when `decay` (None = off) or `tau` is out of range."""
    if decay is not None and not 0.0 <= decay < 1.0:
        raise ValueError(f"model.ema_decay must be in [0, 1) or null (off), got {decay}")
    if not tau > 0:
        raise ValueError(f"model.ema_tau must be > 0 (steps of the decay's warm-up), got {tau}")


def ema_decay_at(decay: float, tau: float, n_averaged: int) -> float:
    """The decay of the update that follows `n_averaged` updates already in the average: d_(n+1)."""
    return decay * (1.0 - math.exp(-n_averaged / tau))


class WarmupEMA(WeightAveraging):
    """Lightning's WeightAveraging with the warmed-up EMA of the module doc, updated every optimizer step.

    Args:
        decay: the decay the warm-up tends to (e.g. 0.999).
        tau: steps of the warm-up (the e-folding count of 1 - d_k / decay).
        device: where the average lives (the training device; None: the module's at setup).
    """

    def __init__(self, decay: float, tau: float = 2000.0, device: torch.device | str | None = None) -> None:
        check_ema_settings(decay, tau)
        super().__init__(device=device, use_buffers=True, multi_avg_fn=self.update_average)
        self.decay, self.tau = decay, tau

    def update_average(self, averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        """One update of tensors of one dtype (AveragedModel groups them), `n_averaged` >= 1 updates in."""
        if averaged[0].is_floating_point():
            get_ema_multi_avg_fn(ema_decay_at(self.decay, self.tau, int(n_averaged)))(averaged, current, n_averaged)
        else:
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)  # counters (BatchNorm's num_batches_tracked): not an average

    def setup(self, trainer, pl_module, stage: str) -> None:
        with warnings.catch_warnings():  # the module's configure_model builds an unsharded model: nothing to warn of
            warnings.filterwarnings("ignore", message=".*overrides the configure_model")
            super().setup(trainer, pl_module, stage)
