"""One evaluation loop: `scripts/evaluate.py --checkpoint` scores exactly the detections that
RetinaNet.predict gives the image files, as `scripts/evaluate.py --gt --results` scores them."""

from __future__ import annotations

import json

import pytest
import torch

from detector import save_detector
from detector.data.images import load_rgb_image
from detector.evaluation.results import detections_to_coco_results
from tests.data.fixtures import load_script
from tests.export.helpers import tiny_detector

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def test_evaluate_checkpoint_equals_predict_scored_from_a_results_file(tiny_synthetic, tmp_path):
    gt = json.loads((tiny_synthetic / "val.json").read_text())
    categories = sorted(c["id"] for c in gt["categories"])
    model = tiny_detector(num_classes=len(categories), min_size=256, max_size=256)  # upscales the 128-px images
    checkpoint = save_detector(model, tmp_path / "m.ckpt")
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"data": {"dataset": "synthetic", "root": str(tiny_synthetic), "min_size": 256,
                                           "max_size": 256, "batch_size": 1, "num_workers": 0}}))
    evaluate = load_script("evaluate").main
    assert evaluate(["--checkpoint", str(checkpoint), "--config", str(config), "--out", str(tmp_path / "a.json")]) == 0

    # predict() on the image files, one at a time (as the loop's batch of 1), scored from a results file
    detections = [model.predict([torch.from_numpy(load_rgb_image(tiny_synthetic / "images" / image["file_name"])
                                                  ).permute(2, 0, 1).float().div(255)])[0] for image in gt["images"]]
    assert sum(len(d["scores"]) for d in detections) > 50
    results = detections_to_coco_results(detections, [image["id"] for image in gt["images"]], categories)
    (tmp_path / "dt.json").write_text(json.dumps(results))
    assert evaluate(["--gt", str(tiny_synthetic / "val.json"), "--results", str(tmp_path / "dt.json"),
                     "--out", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / name).read_text()) for name in ("a.json", "b.json"))
    assert 0 < a["AR100"] and {k: a[k] for k in METRICS} == pytest.approx({k: b[k] for k in METRICS}, abs=1e-12)
