"""The LightningModule: the model, its optimiser and schedule, and logging. Nothing else.

Batches follow detector.data's collate contract: "images" uint8 (N, 3, H, W) padded,
"image_sizes" / "orig_sizes" (N, 2), "boxes" (N, M, 4), "labels" (N, M), "valid" (N, M),
"image_ids" (N,).

Logged (namespaced, TensorBoard): train/loss, train/loss_cls, train/loss_box, train/lr, the
imbalance statistics train/imbalance/{positives,negatives,ignored,neg_loss_share,
easy_neg_loss_share} on the steps the logger writes (every step with imbalance_every_step, which a
callback that reads every step's metrics sets), and val/AP ... val/ARl after each validation.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict

import lightning as L
import torch
import torch.distributed as dist

from ..check_data import warn_low_coverage
from ..checkpoint import CONFIG_KEY
from ..evaluation import COCO_METRIC_NAMES, CocoDetectionAccumulator, is_no_gt
from ..evaluation.inference import detect_collated
from ..model import NonFiniteLossError, RetinaNetConfig, build_retinanet
from .ema import RAW_WEIGHTS_KEY, WarmupEMA, check_ema_settings
from .finetune import init_from_checkpoint, parameter_groups

OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("step", "cosine")
LOSS_PARTS = ("loss_cls", "loss_box")


class NonFiniteLossStop(RuntimeError):
    """Training stopped because a loss part turned non-finite (policy "stop")."""


def lr_factor(step: int, schedule: str = "step", *, warmup_steps: int, warmup_factor: float,
              milestones=(), lr_decay: float = 0.1, total_steps: int | None = None,
              final_factor: float = 0.01) -> float:
    """The lr multiplier after `step` optimizer steps (LambdaLR's lr_lambda).

    Both schedules open with the linear warm-up, warmup_factor -> 1 over `warmup_steps`; after it:
    - "step": lr_decay ** (the number of milestones <= step);
    - "cosine": final + (1 - final) * 0.5 * (1 + cos(pi * t)), t = (step - warmup_steps) /
      (total_steps - warmup_steps) clipped to [0, 1], so the factor is `final_factor` at the last
      step and after it; milestones and lr_decay are ignored. This is torchvision's classification
      reference (references/classification/train.py: LinearLR warm-up, then CosineAnnealingLR over
      the steps after it, eta_min = final_factor x lr), not detectron2's cosine over the whole run.
    """
    warm = 1.0
    if step < warmup_steps:
        alpha = step / warmup_steps
        warm = warmup_factor * (1 - alpha) + alpha
    if schedule == "step":
        return warm * lr_decay ** sum(step >= m for m in milestones)
    t = min(max((step - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0), 1.0)
    # written as 1 - ... so that the factor is exactly 1 at t = 0: the warm-up is the step schedule's
    return warm * (1 - (1 - final_factor) * 0.5 * (1 - math.cos(math.pi * t)))


class RetinaNetModule(L.LightningModule):
    """RetinaNet training and validation.

    Args:
        detector: the model's settings; num_classes None takes the data's class count.
        optimizer: "sgd" (the paper: momentum 0.9) or "adamw".
        lr: learning rate at a global batch of `lr_reference_batch` images; scaled linearly with
            the actual global batch (batch x devices x nodes x accumulation).
        lr_reference_batch: the batch at which `lr` is meant (16 in the paper).
        momentum, weight_decay: SGD momentum (AdamW beta1) and weight decay.
        warmup_steps, warmup_factor: linear warmup from lr * warmup_factor over that many steps.
        milestones, lr_decay: multiply lr by lr_decay at each of these optimizer steps (schedule "step").
        lr_schedule: the decay after the warm-up (`lr_factor`): "step" (milestones, lr_decay) or
            "cosine" (from 1 to lr_final_factor over the run's remaining steps; milestones and
            lr_decay are ignored).
        lr_final_factor: under "cosine", the lr factor at the run's last step.
        channels_last: keep activations NHWC, which makes bf16 convolutions on CPU about twice
            as fast (see docs/benchmarks.md); the numbers do not change.
        on_non_finite: "stop" ends training with a message naming the step and the loss part;
            "skip" drops that batch and goes on.
        imbalance_every_step: compute and log the imbalance statistics on every step, not only on
            the steps the logger writes (they cost host synchronisations).
        ema_decay, ema_tau: keep an exponential moving average of the weights with this decay,
            warmed up over about ema_tau steps (detector/training/ema.py), validate it and save
            it as the checkpoint's weights; None: off.
        init_from: a detector checkpoint to start from (fine-tuning: matching weights, the class
            rows of matching names; optimizer and step fresh), see training/finetune.py.
        backbone_lr_mult: the ResNet's learning rate as a multiple of lr (FPN and heads: lr).
        compile_training: run the training step's network forward through torch.compile (the
            loss, validation and inference stay eager); its first step pays the compile.
    """

    def __init__(
        self, detector: RetinaNetConfig, *, optimizer: str = "sgd", lr: float = 0.01, lr_reference_batch: int = 16,
        momentum: float = 0.9, weight_decay: float = 1e-4, warmup_steps: int = 500, warmup_factor: float = 0.001,
        milestones: list[int] = (60000, 80000), lr_decay: float = 0.1, on_non_finite: str = "stop",
        channels_last: bool = True, imbalance_every_step: bool = False, init_from: str | None = None,
        backbone_lr_mult: float = 1.0, ema_decay: float | None = None, ema_tau: float = 2000.0,
        lr_schedule: str = "step", lr_final_factor: float = 0.01, compile_training: bool = False,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        if on_non_finite not in ("stop", "skip"):
            raise ValueError(f"on_non_finite must be 'stop' or 'skip', got {on_non_finite!r}")
        check_ema_settings(ema_decay, ema_tau)
        if init_from:
            detector.backbone_weights = None  # init_from's weights replace them: nothing to download
        self.detector_config = detector
        self.optimizer_name = optimizer
        self.lr = lr
        self.lr_reference_batch = lr_reference_batch
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.warmup_factor = warmup_factor
        self.milestones = sorted(milestones)
        self.lr_decay = lr_decay
        self.lr_schedule, self.lr_final_factor = lr_schedule, lr_final_factor
        self.on_non_finite = on_non_finite
        self.channels_last = channels_last
        self.imbalance_every_step = imbalance_every_step
        self.ema_decay, self.ema_tau = ema_decay, ema_tau
        self.compile_training, self._compiled_forward = compile_training, None
        self.init_from, self.backbone_lr_mult, self._initialised_from = init_from, backbone_lr_mult, False
        self.save_hyperparameters({"detector": asdict(detector), "optimizer": optimizer, "lr": lr,
                                   "lr_reference_batch": lr_reference_batch, "momentum": momentum,
                                   "weight_decay": weight_decay, "warmup_steps": warmup_steps,
                                   "warmup_factor": warmup_factor, "milestones": list(self.milestones),
                                   "lr_decay": lr_decay, "on_non_finite": on_non_finite,
                                   "channels_last": channels_last, "imbalance_every_step": imbalance_every_step,
                                   "init_from": init_from, "backbone_lr_mult": backbone_lr_mult,
                                   "ema_decay": ema_decay, "ema_tau": ema_tau,
                                   "lr_schedule": lr_schedule, "lr_final_factor": lr_final_factor,
                                   "compile_training": compile_training})
        self.model = self._build(detector) if detector.num_classes else None
        self.accumulator = CocoDetectionAccumulator()
        self.skipped_batches = 0

    # ------------------------------------------------------------------ model and data
    def configure_model(self) -> None:
        """Builds the model once the data's class count is known (when the config leaves it out);
        then `init_from`'s weights, unless a resume (ckpt_path) restores its own.

        The image size is the data's (data.min_size, data.max_size): the model's predict() and the
        export graph read it from the detector config, which takes it from there.
        """
        datamodule = self.trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "hparams") and "min_size" in datamodule.hparams:
            for key in ("min_size", "max_size"):
                setattr(self.detector_config, key, int(datamodule.hparams[key]))
                if self.model is not None:
                    setattr(self.model.config, key, int(datamodule.hparams[key]))
        if self.model is None:
            self.detector_config.num_classes = datamodule.num_classes
            self.model = self._build(self.detector_config)
        if self.init_from and not self._initialised_from and self.trainer.ckpt_path is None:
            names = datamodule.class_names if datamodule is not None else None
            line = init_from_checkpoint(self.model, self.init_from, names).line()
            self._initialised_from = True
            if self.trainer.is_global_zero:
                print(line, file=sys.stderr)

    def _build(self, config: RetinaNetConfig):
        model = build_retinanet(config)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def configure_callbacks(self):
        if self.ema_decay is None or self.trainer.state.fn != "fit":
            return []
        return [WarmupEMA(self.ema_decay, self.ema_tau, device=self.trainer.strategy.root_device)]

    def forward(self, images):
        return self.model(images)

    def on_fit_start(self) -> None:
        """One line when the anchors reach too few training boxes (detector/check_data.py)."""
        datamodule = self.trainer.datamodule
        if self.trainer.is_global_zero and getattr(datamodule, "train_dataset", None) is not None:
            line = warn_low_coverage(datamodule, self.detector_config)
            if line:
                print(line, file=sys.stderr)

    # ------------------------------------------------------------------ training
    def training_step(self, batch, batch_idx):
        outputs = self._training_forward()(batch["images"])
        failed, parts, stats = None, None, None
        try:
            parts, stats = self.model.loss(outputs, batch["boxes"], batch["labels"], batch["valid"])
        except NonFiniteLossError as err:
            failed = err
        failed = self._agree_on_non_finite(failed)  # every process skips, or stops, together
        if failed is not None:
            if self.on_non_finite == "skip":
                self.skipped_batches += 1
                self.log("train/skipped_batches", float(self.skipped_batches), batch_size=len(batch["images"]))
                return None
            raise NonFiniteLossStop(f"step {self.global_step}: {failed}") from failed
        n = len(batch["images"])
        self.log_dict({f"train/{k}": parts[k].detach() for k in ("loss_cls", "loss_box")}, batch_size=n)
        self.log("train/loss", parts["loss"].detach(), batch_size=n, prog_bar=True)
        if self.imbalance_every_step or self._logger_writes_this_step():
            self.log_dict(stats.as_dict("train/imbalance/"), batch_size=n)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=n)
        return parts["loss"]

    def _training_forward(self):
        """The network's forward for training: the model's own, or its torch.compile'd forward (a plain
        function, so that the compiled wrapper is no submodule and the checkpoint's keys stay the same)."""
        if not self.compile_training:
            return self.model
        if self._compiled_forward is None:
            self._compiled_forward = torch.compile(self.model.forward)
        return self._compiled_forward

    def _logger_writes_this_step(self) -> bool:
        """Whether Lightning writes this step's logged values (every log_every_n_steps steps)."""
        trainer = self._attached_trainer()
        if trainer is None:
            return True
        return (trainer.global_step + 1) % trainer.log_every_n_steps == 0 or trainer.should_stop

    def _attached_trainer(self):
        """The Trainer, or None when the module runs without one (the `trainer` property raises then)."""
        try:
            return self.trainer
        except RuntimeError:
            return None

    def _agree_on_non_finite(self, failed: NonFiniteLossError | None) -> NonFiniteLossError | None:
        """With several processes, a non-finite part on any of them is one on all (max all-reduce).

        A process that skipped (returned no loss) while the others ran backward would hang them in
        the gradient all-reduce; one that stopped alone would do the same.
        """
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return failed
        code = torch.tensor([0 if failed is None else 1 + LOSS_PARTS.index(failed.part)], device=self.device)
        dist.all_reduce(code, op=dist.ReduceOp.MAX)
        if failed is None and code.item() > 0:
            failed = NonFiniteLossError(LOSS_PARTS[code.item() - 1], "on another process")
        return failed

    def on_before_optimizer_step(self, optimizer) -> None:
        """A finite loss can still give a non-finite gradient (an overflow in backward): same policy.

        Gradients are all-reduced by now, so every process decides alike. With fp16 loss scaling
        the GradScaler skips such steps itself, and this check stays out of its way.
        """
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            return
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not grads or torch.isfinite(torch.nn.utils.get_total_norm(grads)):
            return
        if self.on_non_finite == "skip":
            for p in self.model.parameters():
                p.grad = None  # the optimizer leaves parameters without a gradient as they are
            self.skipped_batches += 1
            return
        raise NonFiniteLossStop(f"step {self.global_step}: the gradient is not finite (the loss parts were)")

    def effective_lr(self) -> float:
        trainer = self.trainer
        batch = trainer.datamodule.batch_size if trainer.datamodule is not None else self.lr_reference_batch
        global_batch = batch * trainer.world_size * trainer.accumulate_grad_batches
        return self.lr * global_batch / self.lr_reference_batch

    def total_steps(self) -> int:
        """The run's optimizer steps: trainer.max_steps, or Lightning's estimate from the epochs and
        the data when max_steps is -1; ConfigError when neither bounds the run."""
        trainer = self.trainer
        total = trainer.max_steps if trainer.max_steps != -1 else trainer.estimated_stepping_batches
        if not math.isfinite(total):
            from ..cli import ConfigError

            raise ConfigError("--model.lr_schedule cosine needs a bounded run: set --trainer.max_steps "
                              "or --trainer.max_epochs")
        return int(total)

    def configure_optimizers(self):
        lr = self.effective_lr()
        groups = parameter_groups(self.model, lr, self.weight_decay, self.backbone_lr_mult)
        if self.optimizer_name == "sgd":
            opt = torch.optim.SGD(groups, lr=lr, momentum=self.momentum)
        else:
            opt = torch.optim.AdamW(groups, lr=lr, betas=(self.momentum, 0.999))

        total_steps = self.total_steps() if self.lr_schedule == "cosine" else None

        def factor(step: int) -> float:
            return lr_factor(step, self.lr_schedule, warmup_steps=self.warmup_steps, warmup_factor=self.warmup_factor,
                             milestones=self.milestones, lr_decay=self.lr_decay, total_steps=total_steps,
                             final_factor=self.lr_final_factor)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_start(self) -> None:
        # A resumed run restores the optimizer's and scheduler's state, settings included: this run's
        # lr, momentum and weight decay are put back over them (the same values when none changed).
        if not self.trainer.optimizers or not self.trainer.lr_scheduler_configs:
            return
        opt, sched = self.trainer.optimizers[0], self.trainer.lr_scheduler_configs[0].scheduler
        wanted = parameter_groups(self.model, self.effective_lr(), self.weight_decay, self.backbone_lr_mult)
        if len(wanted) != len(opt.param_groups):  # another grouping: the restored state could not have loaded
            return
        sched.base_lrs = [w["lr"] for w in wanted]
        for group, want, factor in zip(opt.param_groups, wanted, sched.lr_lambdas):
            group["initial_lr"] = want["lr"]
            group["lr"] = want["lr"] * factor(sched.last_epoch)  # LambdaLR's own rule
            group["weight_decay"] = want["weight_decay"]
            if "betas" in group:
                group["betas"] = (self.momentum, group["betas"][1])
            elif "momentum" in group:
                group["momentum"] = self.momentum

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self.accumulator.reset()

    def validation_step(self, batch, batch_idx):
        detections = self.predict_step(batch, batch_idx)
        self.accumulator.update(batch["image_ids"], detections)
        return detections

    def predict_step(self, batch, batch_idx=0, dataloader_idx=0):
        """Detections in original image pixels for a collated batch (the evaluation loop's step)."""
        return detect_collated(self.model, batch)

    def on_validation_epoch_end(self) -> None:
        state = self.accumulator.state()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, state)  # every image once: the accumulator drops repeats
            self.accumulator.reset()
            self.accumulator.merge(states)
        if len(self.accumulator) == 0:
            return  # no validation batch ran (e.g. limit_val_batches=0)
        datamodule = self.trainer.datamodule
        metrics = self.accumulator.compute(datamodule.val_coco_gt(), datamodule.label_to_category_id,
                                           per_class=False, quiet=True)
        self.last_metrics = metrics
        # pycocotools' -1 means "no ground truth of that size": not a number to plot
        values = {f"val/{k}": float(metrics[k]) for k in COCO_METRIC_NAMES if not is_no_gt(metrics[k])}
        self.log_dict(values, sync_dist=False, rank_zero_only=False, batch_size=1)

    # ------------------------------------------------------------------ checkpoints
    def _check_same_classes(self, checkpoint: dict) -> None:
        """CheckpointError when the checkpoint was trained on other classes than this run's data has."""
        trained = checkpoint.get("class_names")
        trainer = self._attached_trainer()
        if trainer is None:  # loaded without a Trainer (load_from_checkpoint): no data to compare with
            return
        names = getattr(trainer.datamodule, "class_names", None)
        if trained is None or names is None or list(trained) == list(names):
            return
        from ..checkpoint import CheckpointError

        raise CheckpointError(f"{trainer.ckpt_path}: trained on {len(trained)} classes {_short(trained)}, the data "
                              f"has {len(names)} classes {_short(names)}: a run resumes on the same classes only")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        bad = next((k for k, v in checkpoint["state_dict"].items()
                    if v.is_floating_point() and not torch.isfinite(v).all()), None)
        if bad is not None:  # never replace the last good checkpoint with a broken one
            raise NonFiniteLossStop(f"step {self.global_step}: {bad} is not finite; checkpoint not written")
        checkpoint[CONFIG_KEY] = self.detector_config.to_dict()
        datamodule = getattr(self._attached_trainer(), "datamodule", None)
        if datamodule is not None:  # so that predict.py can name classes and map labels back
            checkpoint["class_names"] = datamodule.class_names
            checkpoint["label_to_category_id"] = datamodule.label_to_category_id

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._check_same_classes(checkpoint)
        if self.model is None and CONFIG_KEY in checkpoint:
            self.detector_config = RetinaNetConfig.from_dict(checkpoint[CONFIG_KEY])
            self.model = self._build(self.detector_config)
        trainer = self._attached_trainer()
        if self.ema_decay is None and RAW_WEIGHTS_KEY in checkpoint and trainer is not None \
                and trainer.state.fn == "fit":  # resuming an EMA run without it: go on from the raw weights
            checkpoint["state_dict"] = checkpoint[RAW_WEIGHTS_KEY]


def _short(names, n: int = 5) -> str:
    """A list of class names in a one-line message, cut after n."""
    names = list(names)
    return "[" + ", ".join(names[:n]) + (f", ... {len(names) - n} more" if len(names) > n else "") + "]"
