"""Detector checkpoints: the model's config (a plain dict) and its weights, loadable without Lightning.

A checkpoint is a dict with "detector_config" (RetinaNetConfig.to_dict()) and "state_dict". The
Lightning module writes the same two keys into its own checkpoints (weights under "model."), and
scripts/import_torchvision.py writes them for torchvision's weights, so `load_detector` reads all
three. Loading uses torch.load(weights_only=True): nothing in the file is executed.

Every checkpoint the project reads goes through `load_torch_file`, and detector checkpoints through
`read_checkpoint`: a file that is not one is a `CheckpointError` of one line saying what was found
instead (empty, HTML, text, a truncated zip, code-carrying pickles, a torchvision state dict, a
Lightning checkpoint of another model). torch's own messages are not passed on: they advise
turning off weights_only, the wrong advice for a broken file and a security trap.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .io import atomic_path
from .model import RetinaNet, RetinaNetConfig, build_retinanet

CONFIG_KEY = "detector_config"
LIGHTNING_PREFIX = "model."
LIGHTNING_VERSION_KEY = "pytorch-lightning_version"  # written by Lightning into every checkpoint
TORCHVISION_RETINANET_KEY = "head.classification_head.cls_logits.weight"
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # pre-1.6 torch.save


class CheckpointError(RuntimeError):
    """The file is missing, unreadable or not a detector checkpoint."""


def save_detector(model: RetinaNet, path: str | os.PathLike, **extra) -> Path:
    """Write config + weights atomically (a temporary file, then rename)."""
    with atomic_path(path) as tmp:
        torch.save({CONFIG_KEY: model.config.to_dict(), "state_dict": model.state_dict(), **extra}, tmp)
    return Path(path)


def _sniff(path: Path) -> str | None:
    """What the file is when its first bytes already say it cannot be a torch file, else None."""
    with path.open("rb") as f:
        head = f.read(512)
    if not head:
        return "the file is empty (0 bytes)"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")) or b"<html" in text:
        return "an HTML page (a download that saved the server's page instead of the file?)"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            return "a truncated or damaged zip archive (an interrupted download or copy?)"
        if not any(n.endswith("data.pkl") for n in names):
            return f"a zip archive that is not a torch file (members: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
        return None
    if head.startswith(_LEGACY_TORCH_MAGIC) or head[:1] == b"\x80":
        return None  # a pickle (torch's legacy format): torch.load decides
    try:
        sample = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"an unknown format (first bytes {head[:8].hex(' ')})"
    if sample.isprintable() or all(c.isprintable() or c in "\r\n\t" for c in sample):
        return f"a text file (starting {sample.strip()[:40]!r})"
    return f"an unknown format (first bytes {head[:8].hex(' ')})"


def _load_failure(path: Path, err: BaseException) -> str:
    """What a file that torch.load(weights_only=True) refused is, in words (never torch's advice)."""
    message = str(err)
    if isinstance(err, pickle.UnpicklingError) and "weights only" in message.lower():
        found = re.search(r"GLOBAL ([\w.]+)", message)
        what = f" ({found.group(1)})" if found else ""
        return (f"it holds Python objects{what} that loading would have to run: refused, nothing in it was run "
                "(a checkpoint holds tensors and plain containers only)")
    if "zip archive" in message or "central directory" in message:
        return "a truncated or damaged zip archive (an interrupted download or copy?)"
    if isinstance(err, (EOFError, pickle.UnpicklingError)) or "truncated" in message.lower():
        return f"a truncated or damaged torch file ({type(err).__name__})"
    return f"an unreadable torch file ({type(err).__name__}: {(message.strip().splitlines() or [''])[0][:120]})"


def load_torch_file(path: str | os.PathLike, what: str = "detector checkpoint") -> Any:
    """The object stored in `path`, read with torch.load(weights_only=True) on the CPU.

    `what` names the kind of file expected, in the error ("not a {what}: ...").

    Raises:
        CheckpointError: one line naming the file and what it is when it is not a readable torch
            file: missing, empty, HTML, text, a damaged zip, or objects that would run code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        found = _sniff(path)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read the file ({err.strerror or err})") from None
    if found is not None:
        raise CheckpointError(f"{path}: not a {what}: {found}")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols in damaged files: the error says it
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure is described in words below
        raise CheckpointError(f"{path}: not a {what}: {_load_failure(path, err)}") from None


def _first_keys(mapping: dict, n: int = 3) -> str:
    keys = [repr(k) for k in list(mapping)[:n]]
    return ", ".join(keys) + (", ..." if len(mapping) > n else "")


def describe_contents(checkpoint: Any) -> str:
    """What a loaded object is, for an error saying why it is not a detector checkpoint."""
    if not isinstance(checkpoint, dict):
        return f"a saved {type(checkpoint).__name__}, not a dict"
    state = checkpoint.get("state_dict")
    if LIGHTNING_VERSION_KEY in checkpoint and CONFIG_KEY not in checkpoint:
        weights = f"; weights such as {_first_keys(state)}" if isinstance(state, dict) and state else ""
        return f"a Lightning checkpoint of another model (no {CONFIG_KEY!r}{weights})"
    tensors = isinstance(checkpoint, dict) and checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values())
    inner = checkpoint.get("model")
    if not tensors and isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
        checkpoint, tensors = inner, True  # torchvision's reference scripts save {"model": state_dict, ...}
    if tensors:
        if any(k.endswith(TORCHVISION_RETINANET_KEY) for k in checkpoint):
            return ("a torchvision RetinaNet state dict: convert it first with "
                    "scripts/import_torchvision.py --src FILE --out MODEL.ckpt")
        return f"a bare state dict of {len(checkpoint)} tensors without {CONFIG_KEY!r} ({_first_keys(checkpoint)})"
    if CONFIG_KEY in checkpoint and "state_dict" not in checkpoint:
        return f"a dict with {CONFIG_KEY!r} but no 'state_dict'"
    return f"a dict without {CONFIG_KEY!r} and 'state_dict' (keys {_first_keys(checkpoint)})" if checkpoint else "an empty dict"


def read_checkpoint(path: str | os.PathLike, *, training: bool = False) -> dict:
    """The checkpoint dict in `path`; `CheckpointError` with one line saying what it is otherwise.

    Args:
        training: require a Lightning training checkpoint of this project's module (what
            `scripts/train.py --ckpt_path` resumes from), not only a model's config and weights.
    """
    path = Path(path)
    checkpoint = load_torch_file(path)
    if not isinstance(checkpoint, dict) or CONFIG_KEY not in checkpoint or not isinstance(
            checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a detector checkpoint: {describe_contents(checkpoint)}")
    if training and LIGHTNING_VERSION_KEY not in checkpoint:
        raise CheckpointError(f"{path}: not a training checkpoint: a detector's weights without training state "
                              "(saved by save_detector or scripts/import_torchvision.py); --ckpt_path takes a "
                              "run's checkpoints/last.ckpt")
    return checkpoint


def checkpoint_class_names(path: str | os.PathLike, num_classes: int, checkpoint: dict | None = None
                           ) -> list[str] | None:
    """The checkpoint's "class_names" (None when it has none); `CheckpointError` unless it is a list
    of exactly `num_classes` strings (a shorter list would fail only after inference, at the first
    detection of a class it lacks)."""
    checkpoint = read_checkpoint(path) if checkpoint is None else checkpoint
    names = checkpoint.get("class_names")
    if names is None:
        return None
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{path}: class_names must be a list of strings, got {type(names).__name__}")
    if len(names) != num_classes:
        raise CheckpointError(f"{path}: {len(names)} class names for a model of {num_classes} classes")
    return list(names)


def load_detector(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> RetinaNet:
    """The model stored in `path` (ours, a Lightning run's, or an imported one), in eval mode.

    The stored config is first built on the meta device (no memory) and the weights' names and
    shapes checked against it, so a config of absurd sizes costs nothing and the real model is
    only as large as the file's own tensors. The backbone's pretrained weights are never fetched:
    the stored weights replace them.
    """
    checkpoint = read_checkpoint(path)
    try:
        config = RetinaNetConfig.from_dict(checkpoint[CONFIG_KEY])
        build_config = replace(config, backbone_weights=None)
        with torch.device("meta"):
            skeleton = build_retinanet(build_config)
    except Exception as err:  # noqa: BLE001 - whatever a stored config breaks is the file's fault
        raise CheckpointError(f"{path}: bad detector config ({type(err).__name__}: {_first_line(err)})") from None
    state = checkpoint["state_dict"]
    if any(isinstance(k, str) and k.startswith(LIGHTNING_PREFIX) for k in state):
        state = {k[len(LIGHTNING_PREFIX):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(LIGHTNING_PREFIX)}
    mismatch = _weights_mismatch(skeleton.state_dict(), state)
    if mismatch:
        raise CheckpointError(f"{path}: weights do not fit the stored config ({mismatch})")
    model = build_retinanet(build_config)
    model.config = config
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: weights do not fit the stored config ({_first_line(err)})") from None
    return model.to(map_location).eval()


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:200]


def _weights_mismatch(expected: dict, state: dict) -> str | None:
    """How `state` differs from the names and shapes of `expected`, in words; None when it fits."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        return f"missing {len(missing)} weights ({_first_keys(dict.fromkeys(missing))}), unexpected " \
               f"{len(unexpected)} ({_first_keys(dict.fromkeys(unexpected))})"
    for k, v in expected.items():
        got = state[k]
        if not isinstance(got, torch.Tensor):
            return f"{k} is a {type(got).__name__}, not a tensor"
        if got.shape != v.shape:
            return f"{k} has shape {tuple(got.shape)}, the config needs {tuple(v.shape)}"
    return None
