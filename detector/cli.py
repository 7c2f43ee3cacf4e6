"""The LightningCLI behind scripts/train.py, and the one-line error handling of every script."""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager

# Input errors of this project: each names what was wrong (a file, a setting) in one line.
from .checkpoint import CheckpointError
from .data.errors import DatasetError
from .evaluation import EvaluationError
from .export.runtime import MissingExtraError
from .io import WriteError
from .model.backbone import BackboneError

USER_ERRORS = (CheckpointError, DatasetError, EvaluationError, BackboneError, FileNotFoundError, MissingExtraError,
               WriteError)


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


def run_cli(args: list[str]) -> int:
    from lightning.pytorch.cli import LightningCLI

    from .quiet import silence_third_party_noise

    silence_third_party_noise()

    class DetectorCLI(LightningCLI):
        """LightningCLI with the checkpoint callback as its own config section, `checkpoint:`,
        so that its folder is overridable on the command line (--checkpoint.dirpath DIR)."""

        def add_arguments_to_parser(self, parser) -> None:
            add_checkpoint_section(parser)

        def instantiate_trainer(self, **kwargs):
            trainer = super().instantiate_trainer(**kwargs)
            use_atomic_checkpoint_io(trainer)  # a kill while writing never leaves a broken last.ckpt
            trainer.callbacks.append(preemption)  # after ModelCheckpoint: the step's own saves come first
            return trainer

        def _parse_ckpt_path(self) -> None:
            # --ckpt_path is read (weights_only) before Lightning's own reading: a missing, truncated
            # or unsafe file is one line, not a traceback from inside the CLI
            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry") and "://" not in str(ckpt_path):
                check_training_checkpoint(ckpt_path)
                self._parse_ckpt_hparams(ckpt_path, subcommand)
                return
            super()._parse_ckpt_path()

        def _parse_ckpt_hparams(self, ckpt_path, subcommand: str) -> None:
            # Lightning's own reading of the checkpoint's hyperparameters, but a checkpoint written
            # before a model setting was removed still resumes (RetinaNetConfig.from_dict's rule)
            import torch

            from .model.config import without_removed_keys

            hparams = torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {})
            hparams.pop("_instantiator", None)
            if isinstance(hparams.get("detector"), dict):
                hparams["detector"] = without_removed_keys(hparams["detector"])
            if not hparams:
                return
            if "_class_path" in hparams:
                hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
            try:
                self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
            except SystemExit:
                sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
                raise

    from .training.datamodule import DetectionDataModule
    from .training.module import NonFiniteLossStop, RetinaNetModule
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from .training.reliability import (
        Preempted,
        PreemptionCheckpoint,
        check_training_checkpoint,
        use_atomic_checkpoint_io,
    )

    preemption = PreemptionCheckpoint()
    with one_line_errors():
        try:
            DetectorCLI(
                RetinaNetModule, DetectionDataModule, args=args, seed_everything_default=0,
                save_config_kwargs={"overwrite": True}, parser_kwargs={"parser_mode": "yaml"},
            )
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
    return 0


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
