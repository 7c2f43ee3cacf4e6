"""What the dataset scan (detector/data/scan.py) costs per image: a first scan, and a cached one.

    python scripts/bench_scan.py --data-root /tmp/scan_syn                      # a COCO-format set (train.json, images/)
    python scripts/bench_scan.py --jpegs 500 --size 640x480 --out /tmp/scan_640  # generated photo-like JPEGs

Prints one JSON object: images, milliseconds per image for the first scan (no cache; the files are
in the OS page cache, read once beforehand, so disk speed is left out) and for a second scan (cache
hits), and both extrapolated to COCO train2017's 118,287 images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

COCO_TRAIN2017 = 118_287


def _photo_like_jpegs(out: Path, count: int, height: int, width: int) -> tuple[list[str], np.ndarray]:
    """`count` JPEGs of smooth gradients plus noise at quality 90 (a size per pixel close to photos)."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    names = []
    for i in range(count):
        base = (np.sin(xx / rng.uniform(20, 80)) + np.cos(yy / rng.uniform(20, 80))) * 60 + 128
        pixels = base[:, :, None] + rng.normal(0, 25, (height, width, 3))
        name = f"{i:06d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out / name, quality=90)
        names.append(name)
    return names, np.tile([height, width], (count, 1))


def main(argv: list[str] | None = None) -> int:
    from detector.data.scan import CACHE_NAME, scan_images

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", help="a COCO-format set: train.json and images/")
    parser.add_argument("--jpegs", type=int, help="generate this many JPEGs into --out instead")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--out", default="/tmp/scan_jpegs", help="folder of the generated JPEGs")
    args = parser.parse_args(argv)
    if args.data_root:
        root = Path(args.data_root)
        data = json.loads((root / "train.json").read_text())
        names = [im["file_name"] for im in data["images"]]
        sizes = np.array([[im["height"], im["width"]] for im in data["images"]])
        image_root = root / "images"
    elif args.jpegs:
        width, height = (int(v) for v in args.size.split("x"))
        image_root = Path(args.out)
        names, sizes = _photo_like_jpegs(image_root, args.jpegs, height, width)
    else:
        parser.error("give --data-root or --jpegs")
    (image_root / CACHE_NAME).unlink(missing_ok=True)
    nbytes = sum((image_root / n).read_bytes().__len__() for n in names)  # warm the page cache
    t0 = time.perf_counter()
    first = scan_images(image_root, names, sizes, progress=False)
    t1 = time.perf_counter()
    second = scan_images(image_root, names, sizes, progress=False)
    t2 = time.perf_counter()
    assert second.cached == len(names)
    n = len(names)
    cold, warm = (t1 - t0) / n, (t2 - t1) / n
    print(json.dumps({
        "images": n, "mean_file_kb": round(nbytes / n / 1024, 1), "unreadable": len(first.bad),
        "first_scan_ms_per_image": round(cold * 1e3, 3), "cached_scan_ms_per_image": round(warm * 1e3, 4),
        "coco_train2017_first_scan_s": round(cold * COCO_TRAIN2017, 1),
        "coco_train2017_cached_scan_s": round(warm * COCO_TRAIN2017, 2),
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
