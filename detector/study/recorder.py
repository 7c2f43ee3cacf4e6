"""StudyRecorder: the callback that keeps a study variant's own record while it trains.

The study runs each variant through the project's LightningCLI (`detector.cli.run_cli`, the
code path of scripts/train.py); the runner adds this callback to the variant's config. It reads
what RetinaNetModule already logs and writes, into `out_dir`:

- `train.csv`: every training step's train/loss, loss_cls, loss_box, lr and the imbalance
  statistics (positives, negatives, ignored anchors per image; neg_loss_share and
  easy_neg_loss_share, the share of the classification loss from negatives and from easy
  negatives p_t > 0.5);
- `val.csv`: the 12 COCO numbers after each validation, by step;
- `diverged.json`: {"step", "message"} when training stopped on a non-finite loss;
- at the end of training: a last validation when the schedule did not end on one (same
  module, same evaluation, same precision), `stats.json` (detector.study.stats: the loss CDFs of
  positives and negatives, the score histograms) and, when `model_path` is set, the trained
  model (detector.checkpoint.save_detector, loadable with detector.load_detector);
- `end.json`: {"steps", "seconds"} written last: training finished normally (seconds: wall time
  of the whole variant, across a kill and resume).

Its record is part of every Lightning checkpoint (state_dict), so a variant resumed from its
last.ckpt after a kill continues the same train.csv and val.csv, without the steps trained after
that checkpoint and before the kill.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import Subset

from ..checkpoint import save_detector
from ..evaluation import COCO_METRIC_NAMES, CocoDetectionAccumulator, is_no_gt
from ..training.module import NonFiniteLossStop
from .records import write_atomic, write_csv
from .stats import GAMMAS, loss_statistics

#: train.csv columns and the logged keys they come from.
TRAIN_KEYS: dict[str, str] = {
    "loss": "train/loss", "loss_cls": "train/loss_cls", "loss_box": "train/loss_box", "lr": "train/lr",
    "positives": "train/imbalance/positives", "negatives": "train/imbalance/negatives",
    "ignored": "train/imbalance/ignored", "neg_loss_share": "train/imbalance/neg_loss_share",
    "easy_neg_loss_share": "train/imbalance/easy_neg_loss_share",
}  # fmt: skip


def _value(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class StudyRecorder(L.Callback):
    """Writes a variant's training record (see the module doc).

    Args:
        out_dir: the variant's folder.
        stats_images: validation images the end-of-training statistics are computed on.
        gammas: the gammas of the loss CDFs (the variant's own is always added).
        model_path: where to save the trained model (None: not saved).
        low_score_thresh: also evaluate the final model with this score threshold (e.g. 0.001; CE's
            scores sit lower than focal loss's): end.json's "low_threshold" holds AP, AP50, AP75 at it.
    """

    def __init__(self, out_dir: str, stats_images: int = 64, gammas: list[float] | None = None,
                 model_path: str | None = None, low_score_thresh: float | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.stats_images = stats_images
        self.gammas = tuple(gammas) if gammas is not None else GAMMAS
        self.model_path = model_path
        self.low_score_thresh = low_score_thresh
        self.train_rows: list[dict] = []
        self.val_rows: list[dict] = []
        self._seen_metrics: dict | None = None
        self._restored = False
        self._seconds_before = 0.0  # wall time of the run before a resume
        self._started = time.perf_counter()

    # ------------------------------------------------------------------ checkpointed state
    def state_dict(self) -> dict:
        return {"train_rows": self.train_rows, "val_rows": self.val_rows, "seconds": self.seconds()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.train_rows = list(state_dict["train_rows"])
        self.val_rows = list(state_dict["val_rows"])
        self._seconds_before = float(state_dict.get("seconds", 0.0))
        self._restored = True

    def seconds(self) -> float:
        """Wall time of the variant so far, the part before a resume included."""
        return self._seconds_before + time.perf_counter() - self._started

    # ------------------------------------------------------------------ records
    def _flush(self) -> None:
        write_csv(self.out_dir / "train.csv", self.train_rows, ["step", *TRAIN_KEYS])
        write_csv(self.out_dir / "val.csv", self.val_rows, ["step", *COCO_METRIC_NAMES])

    def on_fit_start(self, trainer, pl_module) -> None:
        pl_module.imbalance_every_step = True  # train.csv records every step's statistics
        # Lightning restores a checkpoint's callback state before this hook
        self._started = time.perf_counter()
        if not self._restored:
            self.train_rows, self.val_rows, self._seconds_before = [], [], 0.0
        for name in ("train.csv", "val.csv", "diverged.json", "stats.json", "end.json"):
            (self.out_dir / name).unlink(missing_ok=True)
        if self._restored:
            self._flush()  # the record as it was at the checkpoint

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if outputs is None:  # a batch skipped under on_non_finite="skip"
            return
        metrics = trainer.callback_metrics
        row = {k: _value(metrics, key) for k, key in TRAIN_KEYS.items()}
        self.train_rows.append({"step": trainer.global_step, **row})

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        metrics = getattr(pl_module, "last_metrics", None)  # set by the module after each validation
        if metrics is None or metrics is self._seen_metrics:  # no validation batch ran this time
            return
        self._seen_metrics = metrics
        self._add_val_row(trainer.global_step, metrics)
        self._flush()

    def _add_val_row(self, step: int, metrics: dict) -> None:
        values = {k: None if is_no_gt(metrics[k]) else round(float(metrics[k]), 6) for k in COCO_METRIC_NAMES}
        row = {"step": step, **values}
        self.val_rows = [r for r in self.val_rows if r["step"] != step] + [row]

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._flush()
        err: BaseException | None = exception
        while err is not None and not isinstance(err, NonFiniteLossStop):
            err = err.__cause__ or err.__context__
        if err is not None:
            write_atomic(self.out_dir / "diverged.json",
                         json.dumps({"step": trainer.global_step, "message": str(err)}, indent=2) + "\n")

    # ------------------------------------------------------------------ end of training
    def on_train_end(self, trainer, pl_module) -> None:
        step = trainer.global_step
        if not self.val_rows or self.val_rows[-1]["step"] != step:
            self._add_val_row(step, self._final_validation(trainer, pl_module))
            if trainer.logger is not None:
                trainer.logger.log_metrics({f"val/{r}": v for r, v in self.val_rows[-1].items()
                                            if r != "step" and v is not None}, step=step)
        self._flush()
        datamodule = trainer.datamodule
        dataset = datamodule.eval_dataset("val")
        subset = Subset(dataset, range(min(self.stats_images, len(dataset))))
        config = pl_module.detector_config
        own_gamma = config.gamma if config.cls_loss == "focal" else 0.0
        stats = loss_statistics(pl_module.model, datamodule.eval_dataloader(subset), max_images=self.stats_images,
                                own_gamma=own_gamma, gammas=self.gammas)
        write_atomic(self.out_dir / "stats.json", json.dumps(stats) + "\n")
        if self.model_path:
            save_detector(pl_module.model, self.model_path, class_names=datamodule.class_names,
                          label_to_category_id=datamodule.label_to_category_id)
        end = {"steps": step, "seconds": round(self.seconds(), 2)}
        if self.low_score_thresh is not None:
            low = self._final_validation(trainer, pl_module, score_thresh=self.low_score_thresh)
            end["low_threshold"] = {f"{k}_low": None if is_no_gt(low[k]) else round(float(low[k]), 6)
                                    for k in ("AP", "AP50", "AP75")} | {"low_score_thresh": self.low_score_thresh}
        write_atomic(self.out_dir / "end.json", json.dumps(end) + "\n")

    @torch.no_grad()
    def _final_validation(self, trainer, pl_module, score_thresh: float | None = None) -> dict:
        """The module's own validation (predict_step + COCO accumulator) over the val loader.

        score_thresh: the post-processor's score threshold for this pass (default: the model's).
        """
        datamodule = trainer.datamodule
        loader = datamodule.val_dataloader()
        limit = trainer.limit_val_batches
        n_batches = len(loader) if limit is None else (
            int(limit) if isinstance(limit, int) else max(1, math.ceil(float(limit) * len(loader)))
        )
        accumulator = CocoDetectionAccumulator()
        was_training = pl_module.training
        postprocessor = pl_module.model.postprocessor
        default_thresh = postprocessor.score_thresh
        if score_thresh is not None:
            postprocessor.score_thresh = score_thresh
        pl_module.eval()
        try:
            with trainer.precision_plugin.val_step_context():
                for i, batch in enumerate(loader):
                    if i >= n_batches:
                        break
                    batch = {k: v.to(pl_module.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                    accumulator.update(batch["image_ids"], pl_module.predict_step(batch, i))
        finally:
            pl_module.train(was_training)
            postprocessor.score_thresh = default_thresh
        return accumulator.compute(datamodule.val_coco_gt(), datamodule.label_to_category_id, per_class=False,
                                   quiet=True)
