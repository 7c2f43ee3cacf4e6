"""`detector export` / scripts/export.py: write a checkpoint as ONNX or as a torch.export program.

    python scripts/export.py --checkpoint runs/synthetic/checkpoints/best.ckpt --format onnx --out model.onnx
    python scripts/export.py --checkpoint CKPT --format torch-export --out model.pt2

The file holds the whole detector, preprocessing to detections: input "images" (N, 3, H, W)
float32 RGB in [0, 1], any N, H, W; outputs boxes (N, D, 4) XYXY in input pixels, scores (N, D),
labels (N, D) (-1 on padding rows), num_detections (N,), D = the checkpoint's detections_per_img.
ONNX: opset 17, post-processing (top-k, decode, class-wise NMS, best D) in the graph.
Run it with `scripts/predict.py --onnx FILE` or any ONNX runtime; a .pt2 with
torch.export.load(FILE).module()(images).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..checkpoint import checkpoint_class_names, load_detector
from ..cli import one_line_errors
from ..io import ensure_writable_folder, writing
from .exporters import FORMATS, export
from .runtime import require


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--checkpoint", required=True, help="a detector checkpoint (.ckpt)")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (default) or torch-export (.pt2)")
    parser.add_argument("--out", required=True, help="the file to write (model.onnx, model.pt2)")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    with one_line_errors():
        if args.format == "onnx":
            require("onnx")  # before any work: a missing extra is one line
        ensure_writable_folder(Path(args.out).absolute().parent)  # before the export's work
        model = load_detector(args.checkpoint)
        print(f"exporting {args.checkpoint} ({model.config.backbone}, {model.num_classes} classes) as {args.format}",
              file=sys.stderr)
        class_names = checkpoint_class_names(args.checkpoint, model.num_classes)
        with writing(args.out):
            path = export(model, args.out, args.format, class_names=class_names)
    print(path)
    return 0
