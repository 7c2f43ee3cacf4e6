"""Writing a RetinaNet as an ONNX file or a torch.export program (.pt2).

Both take images (N, 3, H, W) float32 RGB in [0, 1], with N, H and W dynamic, and return the
padded detections of `ExportableDetector` (boxes (N, D, 4), scores (N, D), labels (N, D),
num_detections (N,)).

ONNX: opset ONNX_OPSET through the TorchScript-based exporter (torch.onnx.export(dynamo=False)),
whose tracing keeps the data-dependent post-processing (top-k, NMS, scatter) in the graph; class-wise
NMS is one NonMaxSuppression node. Input "images", outputs OUTPUT_NAMES.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path

import torch
from torch.fx.experimental import _config as fx_config

from ..io import write_stream
from ..model.retinanet import RetinaNet
from .graph import OUTPUT_NAMES, ExportableDetector
from .runtime import CLASS_NAMES_KEY, MAX_SIZE_KEY, MIN_SIZE_KEY, require

#: Opset of the ONNX files written here (NonMaxSuppression >= 11, Resize with sizes >= 13).
ONNX_OPSET = 17
FORMATS = ("onnx", "torch-export")
#: The output layout, also written into the ONNX file's metadata ("layout").
LAYOUT = ("images (N, 3, H, W) float32 RGB in [0, 1] -> boxes (N, D, 4) float32 XYXY input pixels, "
          "scores (N, D) float32, labels (N, D) int64 (-1: padding), num_detections (N,) int64; "
          "rows by decreasing score")
INPUT_NAME = "images"


def example_images(batch: int = 2, height: int = 480, width: int = 640) -> torch.Tensor:
    """A traced example: two unequal sides, so that no size is taken for a constant."""
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(0))


def _cpu_copy(model: RetinaNet) -> ExportableDetector:
    """The traceable module around a float32 CPU copy of the model (the caller's model is left as it is)."""
    model = copy.deepcopy(model).cpu().float().to(memory_format=torch.contiguous_format).eval()
    return ExportableDetector(model).eval()


def export_onnx(model: RetinaNet, path: str | os.PathLike, *, opset: int = ONNX_OPSET,
                class_names: list[str] | None = None) -> Path:
    """Write the model, preprocessing to detections, as an ONNX file with dynamic batch and size.

    class_names, if given, go into the file's metadata (key "class_names", a JSON list).
    """
    onnx = require("onnx")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = _cpu_copy(model)
    dynamic = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
    dynamic.update({name: {0: "batch"} for name in OUTPUT_NAMES})
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter is chosen on purpose (see the module docstring): not the user's business
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", module="torch.onnx.*")
        warnings.filterwarnings("ignore", message=".*torch.jit.script. is deprecated.*")  # inside torchvision's nms
        # the indices this graph gathers with are never negative
        warnings.filterwarnings("ignore", message=".*advanced indexing in opset.*")
        torch.onnx.export(
            module, (example_images(),), str(path), dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic,
        )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    metadata = {"opset": str(opset), "layout": LAYOUT, "detections_per_img": str(model.config.detections_per_img),
                MIN_SIZE_KEY: str(model.config.min_size), MAX_SIZE_KEY: str(model.config.max_size)}
    if class_names:
        metadata[CLASS_NAMES_KEY] = json.dumps(list(class_names))
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    return path


def export_program(model: RetinaNet) -> torch.export.ExportedProgram:
    """The model as a torch.export program with dynamic batch, height and width."""
    module = _cpu_copy(model)
    dims = {0: torch.export.Dim("batch", max=1024), 2: torch.export.Dim("height", min=2, max=16384),
            3: torch.export.Dim("width", min=2, max=16384)}
    # the torch.export tutorial's switch against 0/1 specialisation: without it the program refuses a
    # resized side or a feature map of size 1 (a 1-px strip, the P7 of a 128-px side)
    with warnings.catch_warnings(), torch.no_grad(), fx_config.patch(backed_size_oblivious=True):
        warnings.filterwarnings("ignore", message=".*create_unbacked_symint. is deprecated.*")  # torchvision's nms
        return torch.export.export(module, (example_images(),), dynamic_shapes={INPUT_NAME: dims})


def export_torch(model: RetinaNet, path: str | os.PathLike) -> Path:
    """Write the torch.export program (.pt2); load it with torch.export.load(path).module()."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program = export_program(model)
    write_stream(path, lambda stream: torch.export.save(program, stream))  # a failed write: one line, not an abort
    return path


def export(model: RetinaNet, path: str | os.PathLike, fmt: str, class_names: list[str] | None = None) -> Path:
    """Write `model` to `path` in format `fmt` (one of FORMATS)."""
    if fmt == "onnx":
        return export_onnx(model, path, class_names=class_names)
    if fmt == "torch-export":
        return export_torch(model, path)
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
