"""Images and PR curves through whichever Lightning loggers the trainer has, not only TensorBoard.

Each logger is asked the way it takes an image: TensorBoard's ``experiment.add_image``; a
logger's own ``log_image(key, images=[...], step=...)`` (Lightning's WandbLogger, and any logger
written to that signature); MLflow's client ``experiment.log_image(run_id, image, artifact_file=...)``
(Lightning's MLFlowLogger has no image method of its own). Other loggers (CSV) are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


def _hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 numpy from (3, H, W) uint8 tensor or (H, W, 3) uint8 array."""
    if isinstance(image, torch.Tensor):
        return image.detach().cpu().permute(1, 2, 0).contiguous().numpy()
    return np.ascontiguousarray(image)


def log_image(loggers: Iterable[Any], key: str, image: torch.Tensor | np.ndarray, step: int) -> list[Any]:
    """Log one RGB uint8 image, (3, H, W) tensor or (H, W, 3) array, to every logger that can take
    one; returns those loggers."""
    done = []
    for lg in loggers:
        experiment = getattr(lg, "experiment", None)
        if hasattr(experiment, "add_image"):  # TensorBoard's SummaryWriter
            chw = torch.from_numpy(_hwc(image)).permute(2, 0, 1) if isinstance(image, np.ndarray) else image.cpu()
            experiment.add_image(key, chw, step)
        elif callable(getattr(lg, "log_image", None)):  # W&B-style loggers
            lg.log_image(key=key, images=[_hwc(image)], step=step)
        elif callable(getattr(experiment, "log_image", None)) and getattr(lg, "run_id", None):  # MLflow's client
            experiment.log_image(lg.run_id, _hwc(image), artifact_file=f"{key}/step_{step:07d}.png")
        else:
            continue
        done.append(lg)
    return done


def log_pr_curve(loggers: Iterable[Any], key: str, true_positives: np.ndarray, detections: np.ndarray,
                 num_gt: int, step: int) -> list[Any]:
    """A precision-recall curve over score thresholds 0..1 (S points, TensorBoard's PR-curve
    plugin, the loggers that have it): (S,) true positives and (S,) detections with score >= each
    threshold, ``num_gt`` ground-truth boxes. Detection has no true negatives: they are 0."""
    done = []
    tp = np.asarray(true_positives, dtype=np.float64)
    n = np.asarray(detections, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n > 0, tp / np.maximum(n, 1), 1.0)
    recall = tp / num_gt if num_gt else np.zeros_like(tp)
    for lg in loggers:
        experiment = getattr(lg, "experiment", None)
        if hasattr(experiment, "add_pr_curve_raw"):
            experiment.add_pr_curve_raw(key, tp, n - tp, np.zeros_like(tp), num_gt - tp, precision, recall,
                                        global_step=step, num_thresholds=len(tp))
            done.append(lg)
    return done
