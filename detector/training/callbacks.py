"""Training callbacks: validation images with predicted and true boxes, and the report's figures
(PR curves per class, the confusion matrix) after each validation, through every logger that
takes images (image_logging.py); the checkpoint callback of the `checkpoint:` config section."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torchvision.utils import make_grid

from ..drawing import draw_detections
from ..evaluation.coco import class_names, run_coco_eval
from ..evaluation.confusion import confusion_matrix, row_normalised
from ..evaluation.curves import SCORE_GRID, class_matches, class_table, counts_at, default_score_threshold, pr_curves
from ..evaluation.figures import confusion_figure, figure_to_array, pr_figure
from ..model import rescale_boxes
from .image_logging import log_image, log_pr_curve


class DetectionImageLogger(L.Callback):
    """Logs the first `num_images` validation images with their boxes after each validation.

    Boxes are drawn on the network input (the resized image).
    """

    def __init__(self, num_images: int = 4, min_score: float = 0.3) -> None:
        self.num_images = num_images
        self.min_score = min_score

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero or not trainer.loggers:
            return
        names = getattr(trainer.datamodule, "class_names", None)
        tiles = []
        for i, det in enumerate(outputs[: self.num_images]):  # detections in original-image pixels
            h, w = batch["image_sizes"][i].tolist()
            det = {**det, "boxes": rescale_boxes(det["boxes"], from_size=batch["orig_sizes"][i].tolist(), to_size=(h, w))}
            gt = batch["boxes"][i][batch["valid"][i]]
            tiles.append(draw_detections(batch["images"][i][:, :h, :w], det, gt, names, self.min_score))
        size = max(t.shape[1] for t in tiles), max(t.shape[2] for t in tiles)
        tiles = [torch.nn.functional.pad(t, (0, size[1] - t.shape[2], 0, size[0] - t.shape[1])) for t in tiles]
        log_image(trainer.loggers, "val/detections", make_grid(tiles, nrow=len(tiles), padding=2), trainer.global_step)


class ValidationFigureLogger(L.Callback):
    """After each validation: per class, TensorBoard's PR curve (IoU 0.5, over score thresholds)
    as ``val/pr_curve/<class>``; to every image logger, pycocotools' PR curves as
    ``val/pr_curves`` and the confusion matrix (IoU 0.5, at the pooled best-F1 score threshold,
    mmdetection's definition) as ``val/confusion_matrix``: the HTML report's figures.

    Reads the LightningModule's ``accumulator`` (the validation's detections, gathered from every
    process) and evaluates them again with pycocotools for its per-image matches.
    """

    def on_validation_end(self, trainer, pl_module) -> None:
        accumulator = getattr(pl_module, "accumulator", None)
        if trainer.sanity_checking or not trainer.is_global_zero or not trainer.loggers or not accumulator:
            return
        datamodule = trainer.datamodule
        coco_gt = datamodule.val_coco_gt()
        results = accumulator.results(datamodule.label_to_category_id)
        coco_eval = run_coco_eval(coco_gt, results, image_ids=accumulator.image_ids)
        names = class_names(coco_eval.params.catIds, coco_gt.cats)
        matches = class_matches(coco_eval, 0.5)
        step = trainer.global_step
        for name, m in zip(names, matches):
            tp, n = counts_at(m.scores, m.true_positive, SCORE_GRID)
            log_pr_curve(trainer.loggers, f"val/pr_curve/{name}", tp, n, m.num_gt, step)
        table = class_table(coco_eval, matches, names)
        log_image(trainer.loggers, "val/pr_curves", figure_to_array(pr_figure(pr_curves(coco_eval), names, table)), step)
        threshold = default_score_threshold(matches)
        counts = confusion_matrix(coco_gt, results, accumulator.image_ids, coco_eval.params.catIds,
                                  score_threshold=threshold)
        fig = confusion_figure(counts.astype(float), row_normalised(counts), [*names, "background"], threshold)
        log_image(trainer.loggers, "val/confusion_matrix", figure_to_array(fig), step)


class Checkpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint (same arguments), with `save_last` writing last.ckpt after every
    validation (or training epoch, whichever the callback saves on) and at the end of training,
    unless a checkpoint was written at that step already.

    Lightning (2.6) writes last.ckpt there only when a top-k checkpoint was written at the same
    step, and at the end only when it never wrote one: with `monitor: val/AP`, a run whose AP
    stopped improving, or a study with `save_top_k: 0`, would leave a stale last.ckpt to resume
    from.
    """

    def __init__(self, *args, save_on_train_epoch_end: bool | None = None, **kwargs) -> None:
        super().__init__(*args, save_on_train_epoch_end=save_on_train_epoch_end, **kwargs)
        self.save_on_train_epoch_end = save_on_train_epoch_end
        self.saved_step: int | None = None  # the global step of the last checkpoint written in this process

    def saves_on_train_epoch_end(self, trainer) -> bool:
        """Whether ModelCheckpoint saves at a training epoch's end rather than after validation: its
        rule (save_on_train_epoch_end, else at the epoch's end when validation runs there or never),
        read from the trainer's public validation schedule."""
        if self.save_on_train_epoch_end is not None:
            return self.save_on_train_epoch_end
        if trainer.check_val_every_n_epoch != 1:
            return False
        batches = trainer.num_val_batches
        if (sum(batches) if isinstance(batches, list) else batches) == 0:
            return True
        return trainer.val_check_interval == 1.0

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        self.saved_step = trainer.global_step  # every trainer.save_checkpoint passes here

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        self._save_last_if_missed(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.saves_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self.saves_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def _save_last_if_missed(self, trainer) -> None:
        if not self.save_last or trainer.state.fn != "fit" or trainer.sanity_checking or trainer.fast_dev_run \
                or self.saved_step == trainer.global_step:
            return
        metrics = {**trainer.callback_metrics, "epoch": trainer.current_epoch, "step": trainer.global_step}
        # set before saving: the path is part of this callback's state in the checkpoint
        self.last_model_path = self.format_checkpoint_name(metrics, self.CHECKPOINT_NAME_LAST)
        trainer.save_checkpoint(self.last_model_path, self.save_weights_only)
