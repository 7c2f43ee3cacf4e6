"""Validation figures (PR curves per class, the confusion matrix) through every kind of image
logger, and the report of a trained checkpoint end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from detector.cli import run_cli
from detector.evaluation import CocoDetectionAccumulator, load_coco_gt
from detector.training.callbacks import ValidationFigureLogger

from .conftest import TINY

ROOT = Path(__file__).resolve().parents[2]


class WandbStyleLogger(Logger):
    """A logger with W&B's ``log_image(key, images, step)``, recording the calls."""

    def __init__(self):
        super().__init__()
        self.images = {}

    name = "wandb-style"
    version = 0

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_image(self, key, images, step=None):
        self.images[key] = (images, step)


class MlflowClientStandIn:
    def __init__(self):
        self.calls = []

    def log_image(self, run_id, image, artifact_file=None):
        self.calls.append((run_id, image, artifact_file))


class MlflowStyleLogger(Logger):
    """MLFlowLogger's shape: no image method of its own, an MlflowClient as ``experiment``."""

    name = "mlflow-style"
    version = 0
    run_id = "run-1"

    def __init__(self):
        super().__init__()
        self._client = MlflowClientStandIn()

    @property
    def experiment(self):
        return self._client

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass


GT = {
    "images": [{"id": i, "width": 320, "height": 240, "file_name": f"{i}.jpg"} for i in (1, 2)],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 50, 50], "area": 2500.0, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 5, "bbox": [100, 0, 50, 50], "area": 2500.0, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 100, 50, 50], "area": 2500.0, "iscrowd": 0},
    ],
    "categories": [{"id": 3, "name": "box"}, {"id": 5, "name": "disc"}],
}
# per image: XYXY boxes, scores, labels (0 = box, 1 = disc)
DETECTIONS = {
    1: ([[0, 0, 50, 50], [100, 0, 150, 50], [200, 100, 250, 150]], [0.9, 0.4, 0.7], [0, 0, 1]),
    2: ([[0, 100, 50, 150], [0, 100, 50, 140]], [0.8, 0.3], [0, 0]),
}


def test_validation_figures_reach_tensorboard_wandb_and_mlflow_style_loggers(tmp_path):
    accumulator = CocoDetectionAccumulator()
    for image_id, (boxes, scores, labels) in DETECTIONS.items():
        accumulator.update([image_id], [{"boxes": np.array(boxes, np.float32), "scores": np.array(scores, np.float32),
                                         "labels": np.array(labels)}])
    coco = load_coco_gt(json.loads(json.dumps(GT)))
    tensorboard, wandb, mlflow = TensorBoardLogger(tmp_path, name="tb"), WandbStyleLogger(), MlflowStyleLogger()
    trainer = SimpleNamespace(
        sanity_checking=False, is_global_zero=True, global_step=7,
        loggers=[tensorboard, wandb, mlflow, CSVLogger(tmp_path, name="csv")],
        datamodule=SimpleNamespace(val_coco_gt=lambda: coco, label_to_category_id=[3, 5]),
    )
    ValidationFigureLogger().on_validation_end(trainer, SimpleNamespace(accumulator=accumulator))
    tensorboard.experiment.flush()

    assert set(wandb.images) == {"val/pr_curves", "val/confusion_matrix"}
    for images, step in wandb.images.values():
        assert step == 7 and images[0].dtype == np.uint8 and images[0].ndim == 3 and images[0].shape[2] == 3
    assert sorted(c[2] for c in mlflow.experiment.calls) == ["val/confusion_matrix/step_0000007.png", "val/pr_curves/step_0000007.png"]
    assert all(c[0] == "run-1" for c in mlflow.experiment.calls)

    events = EventAccumulator(str(tensorboard.log_dir), size_guidance={"tensors": 0, "images": 0})
    events.Reload()
    assert {"val/pr_curves", "val/confusion_matrix"} <= set(events.Tags()["images"])
    assert {"val/pr_curve/box", "val/pr_curve/disc"} <= set(events.Tags()["tensors"])

    # the PR curve's counts at threshold 0 against pycocotools' own matching at IoU 0.5
    ref_gt = COCO()
    ref_gt.dataset = json.loads(json.dumps(GT))
    ref_gt.createIndex()
    ev = COCOeval(ref_gt, ref_gt.loadRes(accumulator.results([3, 5])), iouType="bbox")
    ev.evaluate()
    for name, cat_id in (("box", 3), ("disc", 5)):
        entries = [e for e in ev.evalImgs if e is not None and e["category_id"] == cat_id and e["aRng"] == [0, 1e10]]
        tp = sum(int((np.asarray(e["dtMatches"][0]) > 0).sum()) for e in entries)
        dets = sum(len(e["dtScores"]) for e in entries)
        num_gt = sum(int((np.asarray(e["gtIgnore"]) == 0).sum()) for e in entries)
        curve = events.Tensors(f"val/pr_curve/{name}")[0]
        values = tensor_util.make_ndarray(curve.tensor_proto)  # (6, S): TP, FP, TN, FN, precision, recall
        assert curve.step == 7
        assert (values[0, 0], values[1, 0], values[3, 0]) == (tp, dets - tp, num_gt - tp)  # TP, FP, FN


def test_trained_checkpoint_report_and_tensorboard_figures(tiny_synthetic, tmp_path):
    run = tmp_path / "run"
    args = ["fit", "--config", "configs/synthetic.yaml", "--data.root", str(tiny_synthetic),
            "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run),
            "--checkpoint.dirpath", str(run / "ckpt"), *TINY, "--trainer.max_steps", "2",
            "--trainer.val_check_interval", "2", "--trainer.num_sanity_val_steps", "0"]
    assert run_cli(args) == 0
    events = EventAccumulator(str(next(run.rglob("events.out.tfevents.*")).parent), size_guidance={"images": 0})
    events.Reload()
    assert {"val/detections", "val/pr_curves", "val/confusion_matrix"} <= set(events.Tags()["images"])

    spec = importlib.util.spec_from_file_location("evaluate_script_ckpt", ROOT / "scripts" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "report"
    assert module.main(["--checkpoint", str(run / "ckpt" / "best.ckpt"), "--config", "configs/synthetic.yaml",
                        "--data-root", str(tiny_synthetic), "--report", str(out), "--out", str(tmp_path / "m.json")]) == 0
    data = json.loads((out / "report.json").read_text())
    assert data["num_images"] == 8 and [r["class"] for r in data["per_class"]] == [
        "circle", "square", "triangle", "cross", "ring"]
    assert data["coco"]["AP"] == pytest.approx(json.loads((tmp_path / "m.json").read_text())["AP"])
    assert data["gallery"]["images"] and all((out / g["picture"]).is_file() for g in data["gallery"]["images"])
