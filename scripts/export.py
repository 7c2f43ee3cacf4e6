"""Write a trained detector as ONNX or as a torch.export program, preprocessing to detections.

    python scripts/export.py --checkpoint runs/synthetic/checkpoints/best.ckpt --format onnx --out model.onnx
    python scripts/export.py --checkpoint CKPT --format torch-export --out model.pt2

The same command as `detector export`; see detector/export/command.py for the file's layout.
"""

from __future__ import annotations

import sys

from detector.export.command import main

if __name__ == "__main__":
    sys.exit(main())
