"""Fine-tuning: start a model from another detector's weights (`--model.init_from PATH`).

Shape symbols: A anchors per location, K classes of this model, K' of the source, C channels.

`init_from_checkpoint` reads a detector checkpoint (a run's best.ckpt / last.ckpt, one of
`save_detector`, or what scripts/import_torchvision.py writes) and copies its weights into a
freshly built model:
- every tensor whose name and shape match is loaded;
- the classification output layer (cls_logits, (A * K, C, 3, 3) and (A * K,)), when the class
  lists differ, keeps this model's own initialisation (head.py: Gaussian weights, the prior
  bias), except the rows of each class whose name matches a source class (case-insensitive),
  which are copied for every anchor; a source without class names counts as the same class list
  when K' = K;
- any other tensor whose shape differs, or that the source lacks, keeps its initialisation and is
  counted as skipped.
An architecture that does not fit (another ResNet, another FPN width) is a `CheckpointError`
naming both. Only weights travel: the optimizer, the schedule and the step start fresh (a resume
is `--ckpt_path`).

Two settings usually go with it: `model.detector.frozen_stages` (0 trains everything, 1 freezes the
stem, 2 the stem and layer1, ... 5 the whole ResNet) and `model.backbone_lr_mult`, the learning
rate of the ResNet (`backbone.body.*`; the FPN and heads keep the base rate) as a multiple of
`lr`, see `parameter_groups`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..checkpoint import CONFIG_KEY, LIGHTNING_PREFIX, CheckpointError, read_checkpoint

CLS_WEIGHT = "head.classification_head.cls_logits.weight"
CLS_BIAS = "head.classification_head.cls_logits.bias"
#: Settings that must agree for the weights to mean anything (the error names both values).
ARCHITECTURE_KEYS = ("backbone", "fpn_channels")
#: Parameters that `backbone_lr_mult` scales: the ResNet, not the FPN.
BACKBONE_PREFIX = "backbone.body."


@dataclass
class InitReport:
    """What `init_from_checkpoint` did, for its one summary line."""

    source: str
    loaded: int = 0
    reinitialised: int = 0
    skipped: list[str] = field(default_factory=list)
    rows_copied: list[str] = field(default_factory=list)  # target class names whose rows came from the source
    num_classes: int = 0

    def line(self) -> str:
        text = (f"init_from {self.source}: {self.loaded} tensors loaded, {self.reinitialised} re-initialised, "
                f"{len(self.skipped)} skipped")
        if self.skipped:
            text += f" ({', '.join(self.skipped[:3])}{', ...' if len(self.skipped) > 3 else ''})"
        if self.reinitialised:
            copied = f": {', '.join(self.rows_copied)}" if self.rows_copied else ""
            text += f"; class rows copied {len(self.rows_copied)} of {self.num_classes}{copied}"
        return text


def _fold(name: str) -> str:
    return str(name).strip().casefold()


def _source_state(checkpoint: dict) -> dict[str, Tensor]:
    state = checkpoint["state_dict"]
    if any(isinstance(k, str) and k.startswith(LIGHTNING_PREFIX) for k in state):
        state = {k[len(LIGHTNING_PREFIX):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(LIGHTNING_PREFIX)}
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}


def check_architecture(source_config: dict, config, path: str | os.PathLike) -> None:
    """One `CheckpointError` line naming both architectures when backbone or FPN width differ."""
    differ = [k for k in ARCHITECTURE_KEYS if source_config.get(k) != getattr(config, k)]
    if differ:
        theirs = ", ".join(f"{k}={source_config.get(k)}" for k in ARCHITECTURE_KEYS)
        ours = ", ".join(f"{k}={getattr(config, k)}" for k in ARCHITECTURE_KEYS)
        raise CheckpointError(f"{path}: architecture does not fit: the checkpoint is {theirs}, this model {ours}; "
                              f"set model.detector.{differ[0]} to the checkpoint's value")


def class_rows(source_names: list[str] | None, target_names: list[str] | None, source_k: int,
               target_k: int) -> list[int] | None:
    """For each target label, the source label whose rows it copies (-1: none); None = same class list."""
    if source_names is None or target_names is None:
        return None if source_k == target_k else [-1] * target_k
    if [_fold(n) for n in source_names] == [_fold(n) for n in target_names]:
        return None
    where = {}
    for label, name in enumerate(source_names):
        where.setdefault(_fold(name), label)  # a repeated source name: its first label
    return [where.get(_fold(name), -1) for name in target_names]


@torch.no_grad()
def init_from_checkpoint(model: nn.Module, path: str | os.PathLike,
                         class_names: list[str] | None = None) -> InitReport:
    """Copy the weights of the checkpoint at `path` into `model` (see the module doc).

    Args:
        model: a freshly built RetinaNet (its config says its architecture and class count K).
        path: the source checkpoint.
        class_names: this model's K class names in label order (None: unknown).

    Raises:
        CheckpointError: an unreadable file, or an architecture that does not fit (one line).
    """
    checkpoint = read_checkpoint(path)
    source_config = checkpoint[CONFIG_KEY] if isinstance(checkpoint[CONFIG_KEY], dict) else {}
    check_architecture(source_config, model.config, path)
    source = _source_state(checkpoint)
    target = model.state_dict()
    report = InitReport(source=str(path), num_classes=model.config.num_classes)
    source_names = checkpoint.get("class_names")
    source_names = [str(n) for n in source_names] if isinstance(source_names, (list, tuple)) else None
    source_k = source_config.get("num_classes")
    source_k = source_k if isinstance(source_k, int) and source_k > 0 else len(source_names or [])
    rows = class_rows(source_names, class_names, source_k, model.config.num_classes)

    new_state, copied = {}, set()
    for name, value in target.items():
        theirs = source.get(name)
        if rows is not None and name in (CLS_WEIGHT, CLS_BIAS):
            new_state[name], done = _copy_class_rows(value, theirs, rows, source_k)
            copied |= done
            report.reinitialised += 1
        elif theirs is not None and theirs.shape == value.shape:
            new_state[name] = theirs
            report.loaded += 1
        else:
            report.skipped.append(name)
    names = class_names or [str(k) for k in range(model.config.num_classes)]
    report.rows_copied = [names[k] for k in sorted(copied)]
    model.load_state_dict(new_state, strict=False)
    return report


def _copy_class_rows(ours: Tensor, theirs: Tensor | None, rows: list[int], source_k: int) -> tuple[Tensor, set[int]]:
    """`ours` (A * K, ...) with the rows of target label k taken from source label rows[k], for every anchor.

    Output channel a * K + k is anchor a's logit of class k (head.py's flattening). Nothing is
    copied when the source's layer has another number of anchors or another input width.
    """
    target_k = len(rows)
    anchors = ours.shape[0] // target_k
    if theirs is None or source_k <= 0 or theirs.shape != (anchors * source_k, *ours.shape[1:]):
        return ours, set()
    result = ours.clone().view(anchors, target_k, *ours.shape[1:])
    source = theirs.view(anchors, source_k, *ours.shape[1:])
    done = {k for k, r in enumerate(rows) if 0 <= r < source_k}
    for k in done:
        result[:, k] = source[:, rows[k]]
    return result.view_as(ours), done


def parameter_groups(model: nn.Module, lr: float, weight_decay: float, backbone_lr_mult: float = 1.0) -> list[dict]:
    """Optimizer groups: no weight decay on biases and norms; the ResNet's lr times `backbone_lr_mult`.

    Frozen parameters (requires_grad False) are left out; empty groups are dropped. With a
    multiplier of 1 there are two groups, decay then no decay, as checkpoints before the option hold.
    """
    split = backbone_lr_mult != 1.0
    groups: dict[tuple[bool, bool], list[Tensor]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((split and name.startswith(BACKBONE_PREFIX), p.ndim <= 1), []).append(p)
    return [{"params": params, "lr": lr * (backbone_lr_mult if body else 1.0),
             "weight_decay": 0.0 if no_decay else weight_decay}
            for (body, no_decay), params in sorted(groups.items())]
