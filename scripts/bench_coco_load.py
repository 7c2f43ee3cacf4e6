"""Loading a COCO-sized instances JSON: this tree against an earlier commit, side by side in one run.

    python scripts/bench_coco_load.py --before a9f2302                  # 200,000 annotations
    python scripts/bench_coco_load.py --before a9f2302 --annotations 860000 --images 118000

Writes two synthetic instances JSONs (declared image sizes; for training 1 box in 100 bad: zero
size, NaN or outside its image; for scoring none, as it refuses them), then times, in fresh processes taking turns, `COCODetection(...)` (training's
load: JSON, the shared check, the annotation table) and `load_coco_gt(...)` (scoring's load: JSON,
the check, pycocotools' index) with the package of this tree and with the package of `--before`
(exported with `git archive`). Prints one JSON object: the median seconds of each and the ratios
this tree / before (below 1: faster now).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import sys, time, warnings
warnings.simplefilter("ignore")
from detector.data import COCODetection
from detector.evaluation import load_coco_gt
path, what = sys.argv[1], sys.argv[2]
start = time.perf_counter()
if what == "train":
    COCODetection(path, "/nonexistent")  # indexing reads no image when sizes are declared
else:
    load_coco_gt(path)
print(time.perf_counter() - start)
"""


def write_instances(path: Path, n_images: int, n_annotations: int, bad_fraction: float) -> None:
    """A COCO-like instances JSON: 80 categories with COCO's gaps, boxes of every size, a few bad ones."""
    rng = np.random.default_rng(0)
    category_ids = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
    heights, widths = rng.integers(240, 641, n_images), rng.integers(320, 641, n_images)
    image_of = rng.integers(0, n_images, n_annotations)
    w = np.exp(rng.uniform(np.log(2), np.log(300), n_annotations)).round(2)
    h = np.exp(rng.uniform(np.log(2), np.log(300), n_annotations)).round(2)
    x = (rng.uniform(0, 1, n_annotations) * (widths[image_of] - 1)).round(2)
    y = (rng.uniform(0, 1, n_annotations) * (heights[image_of] - 1)).round(2)
    bad = rng.random(n_annotations) < bad_fraction
    kind = rng.integers(0, 3, n_annotations)
    w[bad & (kind == 0)] = 0.0
    x[bad & (kind == 2)] = widths[image_of[bad & (kind == 2)]] + 5.0
    boxes = np.stack([x, y, w, h], axis=1).tolist()
    for k in np.flatnonzero(bad & (kind == 1)):
        boxes[k][1] = float("nan")
    cats = rng.choice(category_ids, n_annotations)
    data = {
        "images": [{"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "height": int(heights[i]), "width": int(widths[i])}
                   for i in range(n_images)],
        "annotations": [{"id": k + 1, "image_id": int(image_of[k]) + 1, "category_id": int(cats[k]),
                         "bbox": boxes[k], "area": float(w[k] * h[k]), "iscrowd": int(k % 97 == 0)}
                        for k in range(n_annotations)],
        "categories": [{"id": c, "name": f"class{c}", "supercategory": "x"} for c in category_ids],
    }
    path.write_text(json.dumps(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the git revision to compare with (e.g. the merge base)")
    parser.add_argument("--annotations", type=int, default=200_000)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5, help="processes per tree and load, taking turns")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        before = tmp / "before"
        before.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "detector"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        files = {"train": tmp / "train.json", "score": tmp / "score.json"}
        write_instances(files["train"], args.images, args.annotations, 0.01)
        write_instances(files["score"], args.images, args.annotations, 0.0)  # scoring refuses bad boxes
        times: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for tree, where in (("before", before), ("now", ROOT)):
                for what in ("train", "score"):
                    env = {**os.environ, "PYTHONPATH": str(where)}
                    out = subprocess.run([sys.executable, "-c", CHILD, str(files[what]), what], env=env, check=True,
                                         capture_output=True, text=True).stdout
                    times.setdefault(f"{what}_{tree}_s", []).append(float(out.strip().splitlines()[-1]))
    medians = {k: round(statistics.median(v), 3) for k, v in sorted(times.items())}
    report = {"annotations": args.annotations, "images": args.images, "before": args.before, **medians,
              "train_ratio_now_over_before": round(medians["train_now_s"] / medians["train_before_s"], 3),
              "score_ratio_now_over_before": round(medians["score_now_s"] / medians["score_before_s"], 3)}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
