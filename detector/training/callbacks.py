"""Training callbacks: validation images with predicted and true boxes in TensorBoard; the
checkpoint callback of the `checkpoint:` config section."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torchvision.utils import make_grid

from ..drawing import draw_detections
from ..model import rescale_boxes


class DetectionImageLogger(L.Callback):
    """Logs the first `num_images` validation images with their boxes after each validation.

    Boxes are drawn on the network input (the resized image).
    """

    def __init__(self, num_images: int = 4, min_score: float = 0.3) -> None:
        self.num_images = num_images
        self.min_score = min_score

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero or trainer.logger is None:
            return
        experiment = getattr(trainer.logger, "experiment", None)
        if not hasattr(experiment, "add_image"):
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
        experiment.add_image("val/detections", make_grid(tiles, nrow=len(tiles), padding=2), trainer.global_step)


class Checkpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint (same arguments), with `save_last` writing last.ckpt after every
    validation (or training epoch, whichever the callback saves on) and at the end of training.

    Lightning (2.6) writes last.ckpt there only when a top-k checkpoint was written at the same
    step, and at the end only when it never wrote one: with `monitor: val/AP`, a run whose AP
    stopped improving, or a study with `save_top_k: 0`, would leave a stale last.ckpt to resume
    from.
    """

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        self._save_last_if_missed(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def _save_last_if_missed(self, trainer) -> None:
        # _should_skip_saving_checkpoint is also true when a checkpoint was written at this step
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
