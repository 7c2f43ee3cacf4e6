"""The LightningCLI behind scripts/train.py, and the one-line error handling of every script."""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager

# Input errors of this project: each names what was wrong (a file, a setting) in one line.
from .checkpoint import CONFIG_KEY, CheckpointError
from .data.errors import DatasetError
from .evaluation import EvaluationError
from .export.runtime import MissingExtraError
from .io import WriteError
from .model.backbone import BackboneError



class ConfigError(ValueError):
    """A training setting out of its range or contradicting another; the message names the key."""


USER_ERRORS = (CheckpointError, DatasetError, EvaluationError, BackboneError, FileNotFoundError, MissingExtraError,
               WriteError, ConfigError)


# Range-checked argparse types: a bad number is one line from the parser (exit status 2), never a
# traceback or a silent acceptance later.
def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _checked(text, int, lambda v: v >= 1, "an integer >= 1")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _checked(text, int, lambda v: v >= 0, "an integer >= 0")


def unit_interval(text: str) -> float:
    """argparse type: a number in [0, 1] (nan refused)."""
    return _checked(text, float, lambda v: 0.0 <= v <= 1.0, "a number from 0 to 1")


def _checked(text: str, kind, ok, what: str):
    import argparse

    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not ok(value):  # nan fails every comparison, so it is refused too
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


@contextmanager
def one_line_errors(exit_code: int = 2):
    """Turn the project's input errors into `error: ...` on stderr and SystemExit(exit_code)."""
    try:
        yield
    except USER_ERRORS as err:
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        raise SystemExit(exit_code) from None


def run_cli(args: list[str], trainers: list | None = None) -> int:
    """The LightningCLI of scripts/train.py on `args`; returns the exit status. `trainers`, when given, receives
    the Trainer it builds (the loss study validates and measures the fitted module with it after `fit`)."""
    from lightning.pytorch.cli import LightningCLI

    from .quiet import silence_third_party_noise

    silence_third_party_noise()

    class DetectorCLI(LightningCLI):
        """LightningCLI with the checkpoint callback as its own config section, `checkpoint:`,
        so that its folder is overridable on the command line (--checkpoint.dirpath DIR)."""

        def add_arguments_to_parser(self, parser) -> None:
            add_checkpoint_section(parser)

        def parse_arguments(self, parser, args) -> None:
            # --ckpt_path is read (weights_only) here: a missing, truncated or unsafe file is one line,
            # not a traceback from inside the CLI. Lightning would then replace the model settings by
            # the checkpoint's, dropping every --model.* given with it; the path is held back until the
            # classes are built, so the settings given stay, checked against the checkpoint's.
            super().parse_arguments(parser, args)
            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            self.held_ckpt_path = None
            if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry") and "://" not in str(ckpt_path):
                check_training_checkpoint(ckpt_path)
                self._check_resume_settings(ckpt_path, subcommand)
                self.held_ckpt_path = ckpt_path
                self.config[f"{subcommand}.ckpt_path"] = None

        def before_instantiate_classes(self) -> None:
            subcommand = self.config.get("subcommand")
            if self.held_ckpt_path is not None:
                self.config[f"{subcommand}.ckpt_path"] = self.held_ckpt_path
            check_training_numbers(self.config[subcommand] if subcommand else self.config)

        def instantiate_trainer(self, **kwargs):
            trainer = super().instantiate_trainer(**kwargs)
            if trainers is not None:
                trainers.append(trainer)
            use_atomic_checkpoint_io(trainer)  # a kill while writing never leaves a broken last.ckpt
            trainer.callbacks.append(preemption)  # after ModelCheckpoint: the step's own saves come first
            if self.config.get("subcommand") == "fit" and _is_first_process():
                callback = trainer.checkpoint_callback
                folder = callback.dirpath if callback is not None and callback.dirpath else trainer.default_root_dir
                locks.append(lock_run_folder(folder))  # held until this process ends
            return trainer

        def _check_resume_settings(self, ckpt_path, subcommand: str) -> None:
            # the model settings given with --ckpt_path against the checkpoint's: refused or reported
            import torch

            checkpoint = torch.load(ckpt_path, weights_only=True, map_location="cpu")
            hparams = dict(checkpoint.get("hyper_parameters", {}))
            built = checkpoint.get(CONFIG_KEY)
            if isinstance(hparams.get("detector"), dict) and isinstance(built, dict):  # classes left to the data:
                hparams["detector"] = {**hparams["detector"], "num_classes": built.get("num_classes")}  # resolved
            requested = self.config[subcommand].get("model")
            if requested is not None and hparams:
                changes = resume_changes(hparams, requested, ckpt_path)
                if changes:
                    print(f"resuming {ckpt_path} with {len(changes)} changed settings: " + ", ".join(changes),
                          file=sys.stderr)

    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from .training.datamodule import DetectionDataModule
    from .training.module import NonFiniteLossStop, RetinaNetModule

    from .training.reliability import (
        Preempted,
        PreemptionCheckpoint,
        check_training_checkpoint,
        lock_run_folder,
        use_atomic_checkpoint_io,
    )

    preemption, locks = PreemptionCheckpoint(), []
    with one_line_errors():
        try:
            DetectorCLI(
                RetinaNetModule, DetectionDataModule, args=args, seed_everything_default=0,
                save_config_kwargs={"overwrite": True}, parser_kwargs={"parser_mode": "yaml"},
            )
        except MisconfigurationException as err:  # Lightning's check of a setting: its message, one line
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
            return 2
        except NonFiniteLossStop as err:
            print(f"error: training stopped: {err}; the last good checkpoint is kept", file=sys.stderr)
            return 3
        except (Preempted, SIGTERMException):  # a scheduler must not record a preempted run as a success
            stop = preemption.stopped
            if stop is None:
                print("error: training stopped by SIGTERM before a checkpoint could be written", file=sys.stderr)
                return 128 + signal.SIGTERM
            print(f"error: {stop}", file=sys.stderr)
            return 128 + stop.signum
        finally:
            for lock in locks:  # the run folder is free for the next run of this process
                lock.close()
    return 0


_AT_LEAST_1, _AT_LEAST_0, _UNIT, _POSITIVE, _NON_NEGATIVE = (
    ("an integer >= 1", int, lambda v: v >= 1), ("an integer >= 0", int, lambda v: v >= 0),
    ("a number from 0 to 1", float, lambda v: 0 <= v <= 1), ("a number > 0", float, lambda v: v > 0),
    ("a number >= 0", float, lambda v: v >= 0))
#: The count, size, threshold and batch settings of training and their ranges (None passes where
#: the key's default is None: "from the data", "none").
TRAINING_NUMBERS = {
    "data.batch_size": _AT_LEAST_1, "data.val_batch_size": _AT_LEAST_1, "data.num_workers": _AT_LEAST_0,
    "data.min_size": _AT_LEAST_1, "data.max_size": _AT_LEAST_1, "data.size_divisible": _AT_LEAST_1,
    "data.max_train_images": _AT_LEAST_1, "data.max_val_images": _AT_LEAST_1, "data.hflip_prob": _UNIT,
    "data.color_jitter": _NON_NEGATIVE, "data.synthetic_num_train": _AT_LEAST_1, "data.synthetic_num_val": _AT_LEAST_1,
    "model.lr": _POSITIVE, "model.lr_reference_batch": _AT_LEAST_1, "model.momentum": _UNIT,
    "model.weight_decay": _NON_NEGATIVE, "model.warmup_steps": _AT_LEAST_0, "model.warmup_factor": _POSITIVE,
    "model.lr_decay": _POSITIVE, "model.lr_final_factor": _UNIT,
    "model.detector.num_classes": _AT_LEAST_1, "model.detector.fpn_channels": _AT_LEAST_1,
    "model.detector.head_convs": _AT_LEAST_0, "model.detector.score_thresh": _UNIT, "model.detector.nms_thresh": _UNIT,
    "model.detector.fg_iou": _UNIT, "model.detector.bg_iou": _UNIT, "model.detector.topk_candidates": _AT_LEAST_1,
    "model.detector.detections_per_img": _AT_LEAST_1, "model.detector.min_size": _AT_LEAST_1,
    "model.detector.max_size": _AT_LEAST_1, "model.detector.gamma": _NON_NEGATIVE,
    "checkpoint.every_n_train_steps": _AT_LEAST_0, "trainer.accumulate_grad_batches": _AT_LEAST_1,
}


def check_training_numbers(config) -> None:
    """`ConfigError` naming the first setting of TRAINING_NUMBERS out of its range (nan included), an
    unknown model.lr_schedule, or a checkpoint.save_top_k that needs a checkpoint.monitor it does not have."""
    from .training.module import LR_SCHEDULES

    flat = _flatten(config)
    for key, (what, kind, ok) in TRAINING_NUMBERS.items():
        value = flat.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)) \
                or not ok(value):  # nan fails every comparison
            raise ConfigError(f"--{key} {value!r}: must be {what}")
    schedule = flat.get("model.lr_schedule")
    if schedule is not None and schedule not in LR_SCHEDULES:
        raise ConfigError(f"--model.lr_schedule {schedule!r}: must be one of {', '.join(LR_SCHEDULES)}")
    top_k = flat.get("checkpoint.save_top_k")
    if isinstance(top_k, int) and top_k not in (-1, 0, 1) and flat.get("checkpoint.monitor") is None:
        raise ConfigError(f"--checkpoint.save_top_k {top_k} needs --checkpoint.monitor (the metric that ranks "
                          "checkpoints, e.g. val/AP); without one, use 0, 1 or -1")
    if isinstance(top_k, int) and top_k < -1:
        raise ConfigError(f"--checkpoint.save_top_k {top_k}: must be -1 (all), 0 or more")


#: Model settings a resumed run may change (applied by RetinaNetModule.on_train_start or read at
#: each step); any other difference from the checkpoint (architecture, classes, optimizer type,
#: frozen layers) is refused: its weights or optimizer state would not fit.
RESUMABLE_MODEL_KEYS = frozenset({
    "lr", "lr_reference_batch", "momentum", "weight_decay", "warmup_steps", "warmup_factor", "milestones", "lr_decay",
    "lr_schedule", "lr_final_factor", "on_non_finite", "channels_last", "imbalance_every_step", "compile_training",
    "init_from", "detector.backbone_weights",  # replaced by the checkpoint's weights anyway
    "detector.fg_iou", "detector.bg_iou", "detector.allow_low_quality_matches", "detector.cls_loss", "detector.alpha",
    "detector.gamma", "detector.ohem_neg_pos_ratio", "detector.box_loss", "detector.smooth_l1_beta",
    "detector.normalizer_momentum", "detector.guided_loss_scaling", "detector.score_thresh",
    "detector.topk_candidates", "detector.nms_thresh", "detector.detections_per_img", "detector.min_size",
    "detector.max_size", "detector.implementation",
})


def resume_changes(hparams: dict, requested, ckpt_path) -> list[str]:
    """The model settings of `requested` (the parsed config's model section) that differ from the
    checkpoint's `hparams`, as "model.KEY OLD -> NEW"; CheckpointError naming the key and both values
    for one that cannot change on resume (RESUMABLE_MODEL_KEYS). A num_classes left to the data
    (None) is not a change: the data's class set is checked when the checkpoint is loaded."""
    from .model.config import without_removed_keys

    stored = dict(hparams)
    stored.pop("_instantiator", None)
    stored.pop("_class_path", None)
    if isinstance(stored.get("detector"), dict):
        stored["detector"] = without_removed_keys(stored["detector"])
    wanted = _plain(requested)
    changes = []
    wanted_flat = _flatten(wanted)
    for key, old in _flatten(stored).items():
        if key not in wanted_flat and not any(k.startswith(f"{key}.") for k in wanted_flat):
            raise CheckpointError(f"{ckpt_path}: cannot resume: the checkpoint was trained with model.{key} = {old!r}, "
                                  "a setting this version does not have")
        new = wanted_flat[key] if key in wanted_flat else old
        if new == old or (key == "detector.num_classes" and new is None):
            continue
        if key not in RESUMABLE_MODEL_KEYS:
            raise CheckpointError(f"{ckpt_path}: cannot resume with model.{key} = {new!r}: the checkpoint was "
                                  f"trained with {old!r} (its weights or optimizer state would not fit)")
        changes.append(f"model.{key} {old!r} -> {new!r}")
    return changes


def _plain(value):
    """Namespaces, dataclasses and tuples of a parsed config as plain dicts and lists."""
    from dataclasses import asdict, is_dataclass

    if hasattr(value, "as_dict"):
        value = value.as_dict()
    elif is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    flat = {}
    for k, v in _plain(tree).items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _is_first_process() -> bool:
    """Not one of the processes Lightning launches for ranks > 0 (they share rank 0's run folder)."""
    import os

    return all(os.environ.get(name, "0") == "0" for name in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def add_checkpoint_section(parser) -> None:
    """The checkpoint callback as its own config section, `checkpoint:` (--checkpoint.dirpath DIR)."""
    from .training.callbacks import Checkpoint

    parser.add_lightning_class_args(Checkpoint, "checkpoint")


def training_parser():
    """A jsonargparse parser of the training config that run_cli reads (seed_everything, trainer,
    model, data, checkpoint), with its types and without a subcommand: for checking config edits
    before a training starts (the study's overrides). Parse errors raise ArgumentError, never exit.
    """
    from typing import Union

    from lightning.pytorch import Trainer
    from lightning.pytorch.cli import LightningArgumentParser

    from .training.datamodule import DetectionDataModule
    from .training.module import RetinaNetModule

    parser = LightningArgumentParser(exit_on_error=False, parser_mode="yaml")
    # the sections LightningCLI adds (add_default_arguments_to_parser, add_core_arguments_to_parser)
    parser.add_argument("--seed_everything", type=Union[bool, int], default=0)
    parser.add_lightning_class_args(Trainer, "trainer")
    parser.add_lightning_class_args(RetinaNetModule, "model")
    parser.add_lightning_class_args(DetectionDataModule, "data")
    add_checkpoint_section(parser)
    return parser
