"""The gradient of each loss part on each parameter group, measured during training (a callback).

Shape symbols: N images, R anchors, K classes, M ground-truth boxes per image (padded).

`GradientStats` takes one batch at the prior init (before the first optimizer step) and after every
`every_fraction` of training, runs the model forward on it once more in the training's precision,
and differentiates the model's own loss parts (`RetinaNet.loss`: "loss_cls", "loss_box", with guided
loss scaling where configured) with `torch.autograd.grad`. Per parameter group (`GROUPS`:
backbone = model.backbone.body, fpn = model.backbone.fpn, cls_subnet =
model.head.classification_head, box_subnet = model.head.regression_head) one CSV row (`COLUMNS`):

- cls_grad_norm, box_grad_norm: L2 norm of d loss_cls / d theta and of d loss_box / d theta over
  the group's trainable parameters.
- easy negatives: the terms `losses.easy_loss_per_anchor` counts (the imbalance statistics' easy
  share): target 0 and logit < 0, on anchors the matcher does not ignore.
- easy_neg_grad_norm: L2 norm of the part of d loss_cls / d theta that flows through the easy-
  negative terms: with g = d loss_cls / d logits (N, R, K) and E (N, R, K) the easy terms, it is
  J^T (g * E), J = d logits / d theta: the gradient of loss_cls summed over E alone (its normaliser
  and guided scale as the whole loss's), split by the chain rule, so exact for every loss.
- easy_neg_share: easy_neg_grad_norm / cls_grad_norm (may pass 1 where the other terms pull the
  other way; empty where cls_grad_norm is 0: the box subnet).
- easy_neg_logit_share: sum |g * E| / sum |g|, the easy negatives' share of the classification
  gradient at the logits, in [0, 1], the same on every row of a step.
- loss_cls, loss_box: the parts' values on that batch; loss: the classification loss's name.

Training is left as it was: the extra forward runs under a forked RNG, its buffer updates
(BatchNorm statistics, the loss's positive-count average) are put back, and `autograd.grad` writes
no `.grad`. With several processes each measures its own batch and rank 0 writes.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch

from ..model import NonFiniteLossError
from ..model import losses
from ..model.losses import anchor_labels
from ..model.matcher import IGNORE

GROUPS = {"backbone": "backbone.body", "fpn": "backbone.fpn", "cls_subnet": "head.classification_head",
          "box_subnet": "head.regression_head"}
COLUMNS = ("step", "fraction", "group", "cls_grad_norm", "box_grad_norm", "easy_neg_grad_norm", "easy_neg_share",
           "easy_neg_logit_share", "loss_cls", "loss_box", "loss")


def loss_name(config) -> str:
    """The classification loss of a RetinaNetConfig in words, e.g. "focal gamma 2 alpha 0.25"."""
    name = config.cls_loss + (f" gamma {config.gamma:g}" if config.cls_loss == "focal" else "")
    name += f" alpha {config.alpha:g}" if config.alpha is not None and config.cls_loss != "ohem" else ""
    return name + (" + guided scaling" if config.guided_loss_scaling else "")


def easy_negative_terms(model, outputs, gt_boxes, gt_labels, gt_valid) -> torch.Tensor:
    """(N, R, K) bool: the terms with target 0 and logit < 0 (p_t > 0.5) of anchors the matcher keeps."""
    matches = model.matcher(gt_boxes, gt_valid, outputs.anchors)  # (N, R)
    labels = anchor_labels(matches, gt_labels, outputs.cls_logits.shape[-1])  # (N, R)
    return losses.easy_negative_terms(outputs.cls_logits, labels, matches != IGNORE)


def gradient_rows(model, batch: dict) -> list[dict]:
    """One row per group (`COLUMNS` less step and fraction) for a batch of the collate contract."""
    groups = {g: [p for p in model.get_submodule(name).parameters() if p.requires_grad] for g, name in GROUPS.items()}
    params = [p for ps in groups.values() for p in ps]
    outputs = model(batch["images"])
    parts, _ = model.loss(outputs, batch["boxes"], batch["labels"], batch["valid"])
    logits = outputs.cls_logits
    box = torch.autograd.grad(parts["loss_box"], params, retain_graph=True, allow_unused=True)
    *cls, g = torch.autograd.grad(parts["loss_cls"], [*params, logits], retain_graph=True, allow_unused=True)
    easy_mask = easy_negative_terms(model, outputs, batch["boxes"], batch["labels"], batch["valid"])
    g_easy = g * easy_mask
    easy = torch.autograd.grad(logits, params, grad_outputs=g_easy, allow_unused=True)
    logit_share = float(g_easy.float().abs().sum() / g.float().abs().sum().clamp(min=1e-30))

    def norms(grads) -> dict[str, float]:
        by_param = dict(zip(map(id, params), grads))
        return {group: float(torch.nn.utils.get_total_norm([by_param[id(p)].float() for p in ps
                                                             if by_param[id(p)] is not None]))
                for group, ps in groups.items()}

    cls_n, box_n, easy_n = norms(cls), norms(box), norms(easy)
    return [{"group": group, "cls_grad_norm": cls_n[group], "box_grad_norm": box_n[group],
             "easy_neg_grad_norm": easy_n[group],
             "easy_neg_share": easy_n[group] / cls_n[group] if cls_n[group] > 0 else math.nan,
             "easy_neg_logit_share": logit_share, "loss_cls": float(parts["loss_cls"].detach()),
             "loss_box": float(parts["loss_box"].detach()), "loss": loss_name(model.config)} for group in groups]


class GradientStats(L.Callback):
    """Writes `gradient_rows` to a CSV at the prior init and after every `every_fraction` of training.

    Args:
        path: the CSV; a run that starts at step 0 writes it afresh, a resumed run appends to it.
        every_fraction: measure at steps round(i * every_fraction * T), i = 0, 1, ..., for T =
            trainer.max_steps (the estimated steps when it is unset); the last at step T, on the
            last batch after its optimizer step, the others before the step of that number.
    """

    def __init__(self, path: str | os.PathLike, every_fraction: float = 0.1) -> None:
        if not 0 < every_fraction <= 1:
            raise ValueError(f"every_fraction must be in (0, 1], got {every_fraction}")
        self.path, self.every_fraction = Path(path), every_fraction
        self.total, self.steps, self.done = 0, [], set()

    def on_train_start(self, trainer, pl_module) -> None:
        self.total = pl_module.total_steps()  # the run's length by the module's rule (the lr schedule's too)
        count = round(1 / self.every_fraction)
        self.steps = sorted({min(round(i * self.every_fraction * self.total), self.total) for i in range(count + 1)})
        self.done = {s for s in self.steps if s < trainer.global_step}
        if trainer.is_global_zero and (trainer.global_step == 0 or not self.path.is_file()):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, COLUMNS).writeheader()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step < self.total:
            self._measure(trainer, pl_module, batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.total:
            self._measure(trainer, pl_module, batch)

    def _measure(self, trainer, pl_module, batch) -> None:
        step = trainer.global_step
        if step not in self.steps or step in self.done:
            return
        self.done.add(step)
        model = pl_module.model
        buffers = [(b, b.detach().clone()) for b in model.buffers()]
        device = pl_module.device
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.enable_grad(), \
                    trainer.precision_plugin.train_step_context():
                rows = gradient_rows(model, batch)
        except NonFiniteLossError:
            return  # the training step decides what a non-finite batch means
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)
        if trainer.is_global_zero:
            with self.path.open("a", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, COLUMNS)
                for row in rows:
                    writer.writerow({"step": step, "fraction": round(step / self.total, 6), **row})


def read_gradient_csv(path: str | os.PathLike) -> dict[str, list[dict]]:
    """A `GradientStats` CSV as group -> its rows in step order, numbers as floats (empty: nan)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [{k: v if k in ("group", "loss") else float(v or "nan") for k, v in r.items()} for r in csv.DictReader(f)]
    return {group: sorted((r for r in rows if r["group"] == group), key=lambda r: r["step"]) for group in GROUPS}


def gradient_figure(csvs: Sequence[str | os.PathLike], labels: Sequence[str] | None = None, title: str = ""):
    """A Figure of `GradientStats` CSVs: one panel per group (the loss parts' gradient norms against
    the fraction of training, log scale; classification solid, box dashed, one colour per run) and
    one of the easy negatives' shares (at the logits solid, of the cls subnet's gradient dotted).

    Args:
        csvs: one CSV per run; labels: a legend label per CSV (default: the CSV's loss name).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * (len(GROUPS) + 1), 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(GROUPS) + 1)
    colours = [f"C{i}" for i in range(10)]
    for i, path in enumerate(csvs):
        table, colour = read_gradient_csv(path), colours[i % len(colours)]
        label = labels[i] if labels else table["cls_subnet"][0]["loss"]
        for ax, group in zip(axes, GROUPS):
            x = [r["fraction"] for r in table[group]]
            ax.plot(x, [r["cls_grad_norm"] for r in table[group]], "-o", ms=3, color=colour, label=f"{label}: loss_cls")
            ax.plot(x, [r["box_grad_norm"] for r in table[group]], "--s", ms=3, color=colour, label=f"{label}: loss_box")
        rows = table["cls_subnet"]
        x = [r["fraction"] for r in rows]
        axes[-1].plot(x, [r["easy_neg_logit_share"] for r in rows], "-o", ms=3, color=colour,
                      label=f"{label}: at the logits")
        axes[-1].plot(x, [r["easy_neg_share"] for r in rows], ":^", ms=3, color=colour,
                      label=f"{label}: of the cls subnet's gradient")
    for ax, group in zip(axes, GROUPS):
        ax.set(title=f"{group}: gradient norm", xlabel="fraction of training", ylabel="L2 norm")
        if ax.has_data():
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[-1].set(title="easy negatives' share (p_t > 0.5)", xlabel="fraction of training", ylabel="share")
    axes[-1].grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig
