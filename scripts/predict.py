"""Detect objects in an image or a folder of images with a trained checkpoint.

    python scripts/predict.py --checkpoint runs/synthetic/checkpoints/best.ckpt --input photo.jpg --out preds/
    python scripts/predict.py --checkpoint CKPT --input images/ --out preds/ --min-score 0.3
    python scripts/predict.py --onnx model.onnx --input images/ --out preds/   # onnxruntime: pip install -e ".[export]"

Writes preds/detections.json (COCO results: image file, bbox XYWH, score, category) and, for
each image, preds/<file name>.png with the boxes drawn and labelled (photo.jpg -> photo.jpg.png:
inputs never share a drawing, and a run that would overwrite one of its inputs is refused). In a
folder, an unreadable image is skipped with a warning naming it and the rest are predicted (exit
status 0 when at least one was); --strict makes it an error. A single image given directly must
be readable.
"""

from __future__ import annotations

import argparse
import sys

from detector.cli import one_line_errors, positive_int, unit_interval
from detector.predict import predict_paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="a detector checkpoint (.ckpt)")
    model.add_argument("--onnx", metavar="FILE", help="an exported model (scripts/export.py), run with onnxruntime")
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--min-score", type=unit_interval, default=0.3,
                        help="score (0 to 1) below which boxes are not drawn/saved")
    parser.add_argument("--batch-size", type=positive_int, default=4)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--no-images", action="store_true", help="write the JSON only")
    parser.add_argument("--strict", action="store_true", help="an unreadable image in the folder is an error")
    args = parser.parse_args(argv)
    with one_line_errors():
        out = predict_paths(args.checkpoint, args.input, args.out, min_score=args.min_score,
                            batch_size=args.batch_size, device=args.device, draw=not args.no_images, onnx=args.onnx,
                            strict=args.strict)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
