"""Detector checkpoints: the model's config (a plain dict) and its weights, loadable without Lightning.

A checkpoint is a dict with "detector_config" (RetinaNetConfig.to_dict()) and "state_dict". The
Lightning module writes the same two keys into its own checkpoints (weights under "model."), and
scripts/import_torchvision.py writes them for torchvision's weights, so `load_detector` reads all
three. Loading uses torch.load(weights_only=True): nothing in the file is executed.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .io import atomic_path
from .model import RetinaNet, RetinaNetConfig, build_retinanet

CONFIG_KEY = "detector_config"
LIGHTNING_PREFIX = "model."


class CheckpointError(RuntimeError):
    """The file is missing, unreadable or not a detector checkpoint."""


def save_detector(model: RetinaNet, path: str | os.PathLike, **extra) -> Path:
    """Write config + weights atomically (a temporary file, then rename)."""
    with atomic_path(path) as tmp:
        torch.save({CONFIG_KEY: model.config.to_dict(), "state_dict": model.state_dict(), **extra}, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or holds objects weights_only refuses
        first = (str(err).strip().splitlines() or [""])[0]  # EOFError of an empty file has no message
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(err).__name__}: {first})") from None
    if not isinstance(checkpoint, dict) or CONFIG_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a detector checkpoint (no '{CONFIG_KEY}' and 'state_dict')")
    return checkpoint


def load_detector(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> RetinaNet:
    """The model stored in `path` (ours, a Lightning run's, or an imported one), in eval mode."""
    checkpoint = read_checkpoint(path)
    try:
        config = RetinaNetConfig.from_dict(checkpoint[CONFIG_KEY])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: bad detector config ({err})") from None
    state = checkpoint["state_dict"]
    if any(k.startswith(LIGHTNING_PREFIX) for k in state):
        state = {k[len(LIGHTNING_PREFIX):]: v for k, v in state.items() if k.startswith(LIGHTNING_PREFIX)}
    model = build_retinanet(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the stored config ({str(err).splitlines()[0]})") from None
    return model.to(map_location).eval()
