"""Running an exported ONNX detector with onnxruntime, with RetinaNet.predict's contract.

onnxruntime is the optional extra `export`; without it, `OnnxDetector` raises MissingExtraError,
whose message names the command that installs it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor

from ..checkpoint import CheckpointError
from .graph import OUTPUT_NAMES, unpad

INSTALL_HINT = 'pip install -e ".[export]"'
#: ONNX metadata key of the class names (a JSON list) that export_onnx writes.
CLASS_NAMES_KEY = "class_names"
#: ONNX metadata keys of the resize's min_size and max_size.
MIN_SIZE_KEY, MAX_SIZE_KEY = "min_size", "max_size"


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra brings it."""


def require(module: str):
    """Import `module` from the export extra, or raise MissingExtraError naming the extra."""
    try:
        return __import__(module)
    except ImportError:
        raise MissingExtraError(f"{module} is not installed: {INSTALL_HINT}") from None


class OnnxDetector:
    """An exported detector (scripts/export.py --format onnx) in an onnxruntime session.

    Args: path of the .onnx file; device "cpu" or "cuda[:i]" (CUDA when onnxruntime has it).
    `predict(images)` takes and returns what RetinaNet.predict does: a list of (3, H_i, W_i)
    float images in [0, 1] -> per image {"boxes" (D, 4), "scores" (D,), "labels" (D,)}.
    """

    def __init__(self, path: str | os.PathLike, device: str = "cpu") -> None:
        ort = require("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such ONNX file")
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            index = int(device.split(":")[1]) if ":" in device else 0
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as err:  # onnxruntime's own exception types: not a model, a broken file
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise CheckpointError(f"{path}: cannot load the ONNX model ({first})") from None
        inputs, outputs = self.session.get_inputs(), [o.name for o in self.session.get_outputs()]
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or outputs != list(OUTPUT_NAMES):
            found = ", ".join(f"{i.name} {list(i.shape)}" for i in inputs)
            raise CheckpointError(f"{path}: not a detector exported by scripts/export.py (inputs {found}; outputs "
                                  f"{', '.join(outputs) or 'none'}; expected one (N, 3, H, W) input and outputs "
                                  f"{', '.join(OUTPUT_NAMES)})")
        self.input_name = inputs[0].name
        names = self.session.get_modelmeta().custom_metadata_map.get(CLASS_NAMES_KEY)
        try:
            self.class_names: list[str] | None = json.loads(names) if names else None
        except ValueError:
            self.class_names = None
        if self.class_names is not None and not (isinstance(self.class_names, list)
                                                 and all(isinstance(n, str) for n in self.class_names)):
            raise CheckpointError(f"{path}: metadata {CLASS_NAMES_KEY!r} is not a JSON list of names")
        meta = self.session.get_modelmeta().custom_metadata_map
        # the graph's resize sizes, for skipping images too thin to resize (None: not recorded)
        self.min_size, self.max_size = ((int(meta[k]) if meta.get(k, "").isdigit() else None)
                                        for k in (MIN_SIZE_KEY, MAX_SIZE_KEY))

    def run(self, batch: Tensor) -> list[dict[str, Tensor]]:
        """Detections of a batch of equal-sized images (N, 3, H, W) float in [0, 1]."""
        outputs = self.session.run(None, {self.input_name: batch.float().contiguous().numpy()})
        return unpad(*(torch.from_numpy(o) for o in outputs))

    def predict(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Per image detections; images of one size go through the graph together."""
        if not images:
            raise ValueError("predict needs at least one image")
        by_size: dict[tuple, list[int]] = {}
        for i, image in enumerate(images):
            if image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(f"image {i}: expected a (3, H, W) tensor, got shape {tuple(image.shape)}")
            by_size.setdefault(tuple(image.shape), []).append(i)
        detections: list[dict[str, Tensor] | None] = [None] * len(images)
        for indices in by_size.values():
            for i, det in zip(indices, self.run(torch.stack([images[i].cpu() for i in indices]))):
                detections[i] = det
        return detections  # type: ignore[return-value]
