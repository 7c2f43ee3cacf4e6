"""Turn torchvision's retinanet_resnet50_fpn (v1 or v2) weights into a detector checkpoint.

    python scripts/import_torchvision.py --src retinanet_resnet50_fpn_coco-eeacb38b.pth --out r50_coco.ckpt

With internet, torchvision's COCO weights (36.4 AP) are at
https://download.pytorch.org/models/retinanet_resnet50_fpn_coco-eeacb38b.pth; the imported model
keeps torchvision's labels (COCO category ids, 91 classes) and preprocessing (800/1333, ImageNet
mean/std, padding to 32) and stores COCO's class names, so that fine-tuning
(`--model.init_from r50_coco.ckpt`) copies the rows of the classes your data shares with COCO.
"""

from __future__ import annotations

import argparse
import sys

from detector.checkpoint import CheckpointError, save_detector
from detector.interop import from_torchvision, load_torchvision_file, torchvision_class_names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="torchvision state dict (.pth)")
    parser.add_argument("--out", required=True, help="detector checkpoint to write")
    args = parser.parse_args(argv)
    try:
        model = from_torchvision(load_torchvision_file(args.src))
    except CheckpointError as err:  # already names the file
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError) as err:
        print(f"error: {args.src}: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    names = torchvision_class_names(model.config.num_classes)  # so that init_from can match class names
    path = save_detector(model, args.out, source=str(args.src), **({"class_names": names} if names else {}))
    cfg = model.config
    print(f"wrote {path}: {cfg.num_classes} classes, p6 from {cfg.p6_from}, box loss {cfg.box_loss}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
