"""RetinaNet losses: classification (focal, CE, alpha-balanced CE, OHEM) and box regression.

Shape symbols: N images, R anchors, K classes, M ground-truth boxes per image (padded).

Classification is per anchor and per class with sigmoids (no background class). For a logit x
with target y in {0, 1}, p = sigmoid(x) and p_t = p if y = 1 else 1 - p:

    CE(p_t) = -log(p_t)
    FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t),  alpha_t = alpha if y = 1 else 1 - alpha

gamma = 0 gives alpha-balanced CE, and with alpha = None plain CE. Anchors the matcher ignores add
nothing. The summed loss is divided by the number of positive anchors in the whole batch (at
least 1), all-reduced across processes when training is distributed, or by an exponential moving
average of that number (detectron2's option).

The rule: `sigmoid_focal_loss` is that formula (torchvision's), and `classification_loss_per_anchor`
sums it over the classes of each anchor. `fast_focal.focal_loss_per_anchor` computes the same in
fewer passes over memory; `RetinaNetLoss(implementation=...)` chooses (see config.py).

OHEM (the paper's baseline): plain CE, but per image only the positives and the 3x as many
negatives with the highest loss count.

Sampling-Free's guided loss scaling (`guided_loss_scaling`, switched by the constructor's
argument of that name) rescales the classification part after the normalisation.

`RetinaNetLoss.forward` returns its parts by name ("loss_cls", "loss_box", "loss") and the
statistics that explain the foreground/background imbalance (`ImbalanceStats`), computed only when
read: they need host synchronisations that a step nobody logs should not pay for.
"""

from __future__ import annotations

from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss

from .box_coder import BoxCoder
from .config import IMPLEMENTATIONS
from .fast_focal import focal_loss_per_anchor
from .matcher import IGNORE

CLS_LOSSES = ("focal", "ce", "ohem")
BOX_LOSSES = ("smooth_l1", "l1", "giou")


class NonFiniteLossError(FloatingPointError):
    """A loss part is NaN or infinite; `part` names it ("loss_cls" or "loss_box")."""

    def __init__(self, part: str, detail: str = "") -> None:
        self.part = part
        super().__init__(f"{part} is not finite{': ' + detail if detail else ''}")


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float | None = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise focal loss (same shape as `logits`); gamma=0, alpha=None is plain BCE.

    Equal in value and gradient to torchvision.ops.sigmoid_focal_loss(reduction="none")
    (which spells alpha=None as alpha=-1).
    """
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if gamma != 0:
        p = torch.sigmoid(logits)
        p_t = p * targets + (1 - p) * (1 - targets)
        ce = ce * (1 - p_t) ** gamma
    if alpha is not None:
        ce = (alpha * targets + (1 - alpha) * (1 - targets)) * ce
    return ce


def classification_loss_per_anchor(logits: Tensor, labels: Tensor, valid: Tensor, alpha: float | None = 0.25,
                                   gamma: float = 2.0) -> Tensor:
    """The classification loss of each anchor: `sigmoid_focal_loss` against one-hot targets, summed over classes.

    Args:
        logits: (N, R, K), any float dtype (computed in float32).
        labels: (N, R) int64: the class 0..K-1 of a positive anchor; any other value (K) is "no class".
        valid: (N, R) bool: False for ignored anchors, whose loss is 0.

    Returns: (N, R) float32.
    """
    targets = _one_hot(labels, logits.shape[-1])  # (N, R, K)
    loss = sigmoid_focal_loss(logits.float(), targets, alpha, gamma).sum(dim=2)  # (N, R)
    return torch.where(valid, loss, torch.zeros_like(loss))


def easy_loss_per_anchor(logits: Tensor, labels: Tensor, valid: Tensor, alpha: float | None = 0.25,
                         gamma: float = 2.0) -> Tensor:
    """The part of `classification_loss_per_anchor` from easy negative classes: target 0 and
    logit < 0 (p_t > 0.5). Arguments as there; returns (N, R) float32, without gradient."""
    with torch.no_grad():
        targets = _one_hot(labels, logits.shape[-1])  # (N, R, K)
        elem = sigmoid_focal_loss(logits.float(), targets, alpha, gamma)  # (N, R, K)
        easy = elem.masked_fill_((targets == 1) | (logits >= 0), 0.0).sum(dim=2)  # (N, R)
        return torch.where(valid, easy, torch.zeros_like(easy))


def guided_loss_scaling(parts: dict[str, Tensor]) -> dict[str, Tensor]:
    """Sampling-Free's guided loss scaling (Chen et al. 2019, arXiv 1909.04868).

    The classification loss is multiplied by w = loss_box / loss_cls, taken without gradient, so
    its value equals the box loss's and its gradient is the plain loss's gradient times w: the
    classification gradient's size follows the regression's instead of the number of negatives.
    """
    loss_cls, loss_box = parts["loss_cls"], parts["loss_box"]
    scale = (loss_box / loss_cls.clamp_min(torch.finfo(loss_cls.dtype).tiny)).detach()
    scaled = loss_cls * scale
    return {**parts, "loss_cls": scaled, "loss": scaled + loss_box}


def _one_hot(labels: Tensor, k: int) -> Tensor:
    """(N, R) labels -> (N, R, K) float32 targets; a label outside 0..K-1 is "no class" (all 0)."""
    return (labels[..., None] == torch.arange(k, device=labels.device)).float()


def anchor_labels(matches: Tensor, gt_labels: Tensor, k: int) -> Tensor:
    """(N, R) matcher outcomes and (N, M) box labels -> (N, R) class of each anchor, K for "no class"."""
    if gt_labels.shape[1] == 0:
        return torch.full_like(matches, k)
    labels = torch.gather(gt_labels, 1, matches.clamp(min=0))  # (N, R)
    return torch.where(matches >= 0, labels, torch.full_like(labels, k))


def easy_negative_terms(logits: Tensor, labels: Tensor, valid: Tensor) -> Tensor:
    """(N, R, K) bool: the terms `easy_loss_per_anchor` counts, target 0 and logit < 0, on valid anchors."""
    return (_one_hot(labels, logits.shape[-1]) == 0) & (logits.detach() < 0) & valid[..., None]


class ImbalanceStats:
    """Statistics of one batch's classification loss; counts are per image (mean over the batch).

    - positives / negatives / ignored: anchors of each kind per image.
    - neg_loss_share: share of the classification loss that comes from negative anchors.
    - easy_neg_loss_share: share that comes from easy negatives' classes, p_t > 0.5 (i.e. p < 0.5).

    Read from the per-anchor loss the loss's forward computed: the easy part is the negatives' loss
    less their hard classes' (logit >= 0, few), the only elements computed again (`sigmoid_focal_loss`).
    Holds the detached tensors and computes the numbers when first read (each is a host sync).
    """

    NAMES = ("positives", "negatives", "ignored", "neg_loss_share", "easy_neg_loss_share")

    def __init__(self, cls_logits: Tensor, anchor_loss: Tensor, positive: Tensor, valid: Tensor, counted: Tensor,
                 alpha: float | None, gamma: float) -> None:
        """cls_logits (N, R, K); anchor_loss (N, R), the loss each anchor adds; positive, valid (N, R);
        counted (N, R) bool: the anchors whose loss counts (OHEM drops some negatives); alpha, gamma
        as the loss's."""
        self._logits, self._anchor_loss = cls_logits.detach(), anchor_loss.detach()
        self._positive, self._valid, self._counted = positive, valid, counted
        self._alpha, self._gamma = alpha, gamma

    @cached_property
    def _values(self) -> dict[str, float]:
        n = self._positive.shape[0]
        negative = self._valid & ~self._positive  # (N, R)
        total = self._anchor_loss.sum().clamp(min=1e-12)
        neg_loss = (self._anchor_loss * negative).sum()
        counted = negative & self._counted  # (N, R)
        hard = torch.nonzero((self._logits >= 0) & counted[..., None], as_tuple=True)  # (anchor, class), p >= 0.5
        x = self._logits[hard].float()
        hard_loss = sigmoid_focal_loss(x, torch.zeros_like(x), self._alpha, self._gamma).sum()
        easy = (neg_loss - hard_loss).clamp(min=0.0)
        return {
            "positives": float(self._positive.sum()) / n,
            "negatives": float(negative.sum()) / n,
            "ignored": float((~self._valid).sum()) / n,
            "neg_loss_share": float(neg_loss / total),
            "easy_neg_loss_share": float(easy / total),
        }

    positives = property(lambda self: self._values["positives"])
    negatives = property(lambda self: self._values["negatives"])
    ignored = property(lambda self: self._values["ignored"])
    neg_loss_share = property(lambda self: self._values["neg_loss_share"])
    easy_neg_loss_share = property(lambda self: self._values["easy_neg_loss_share"])

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {prefix + k: v for k, v in self._values.items()}


class RetinaNetLoss(nn.Module):
    """Classification + box loss from matched anchors.

    Args:
        num_classes: K.
        cls_loss: "focal" (alpha, gamma), "ce" (gamma ignored: alpha-balanced when alpha is set,
            plain otherwise) or "ohem" (plain CE on positives + the hardest negatives).
        alpha: focal/CE balance of positives in [0, 1], or None for none.
        gamma: focusing parameter >= 0.
        ohem_neg_pos_ratio: negatives kept per positive with OHEM.
        box_loss: "smooth_l1" (beta), "l1" or "giou" (on decoded boxes).
        smooth_l1_beta: transition point of smooth L1 (0 is L1).
        normalizer_momentum: None divides by the batch's positives; m in (0, 1) divides by an EMA
            norm <- m * norm + (1 - m) * positives (detectron2 uses 0.9).
        box_coder: the coder that turns matched boxes into regression targets.
        guided_loss_scaling: scale the classification part by `guided_loss_scaling` (Sampling-Free).
        implementation: "reference" computes the classification loss with
            `classification_loss_per_anchor`, "fast" with `fast_focal.focal_loss_per_anchor` (equal).
    """

    def __init__(
        self, num_classes: int, *, cls_loss: str = "focal", alpha: float | None = 0.25, gamma: float = 2.0,
        ohem_neg_pos_ratio: float = 3.0, box_loss: str = "smooth_l1", smooth_l1_beta: float = 0.1,
        normalizer_momentum: float | None = None, box_coder: BoxCoder | None = None,
        guided_loss_scaling: bool = False, implementation: str = "fast",
    ) -> None:
        super().__init__()
        if cls_loss not in CLS_LOSSES:
            raise ValueError(f"cls_loss must be one of {CLS_LOSSES}, got {cls_loss!r}")
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if normalizer_momentum is not None and not 0.0 < normalizer_momentum < 1.0:
            raise ValueError(f"normalizer_momentum must be in (0, 1) or None, got {normalizer_momentum}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
        self.num_classes = num_classes
        self.cls_loss = cls_loss
        self.alpha = alpha
        self.gamma = gamma if cls_loss == "focal" else 0.0
        self.ohem_neg_pos_ratio = ohem_neg_pos_ratio
        self.box_loss = box_loss
        self.smooth_l1_beta = smooth_l1_beta
        self.normalizer_momentum = normalizer_momentum
        self.box_coder = box_coder or BoxCoder()
        self.guided_loss_scaling = guided_loss_scaling
        self.implementation = implementation
        self.register_buffer("ema_positives", torch.tensor(100.0), persistent=True)

    def _normalizer(self, num_pos: Tensor) -> Tensor:
        num_pos = num_pos.detach().float()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # DDP averages gradients over processes, so divide by the mean count, not the sum.
            torch.distributed.all_reduce(num_pos)
            num_pos = num_pos / torch.distributed.get_world_size()
        if self.normalizer_momentum is None:
            return num_pos.clamp(min=1.0)
        if self.training:
            m = self.normalizer_momentum
            self.ema_positives.mul_(m).add_((1 - m) * num_pos)
        return self.ema_positives.clamp(min=1.0)

    def forward(
        self, cls_logits: Tensor, box_deltas: Tensor, anchors: Tensor, matches: Tensor, gt_boxes: Tensor,
        gt_labels: Tensor,
    ) -> tuple[dict[str, Tensor], ImbalanceStats]:
        """Loss parts and statistics.

        Args:
            cls_logits: (N, R, K).
            box_deltas: (N, R, 4).
            anchors: (R, 4) XYXY.
            matches: (N, R) from the Matcher: box index, BACKGROUND or IGNORE.
            gt_boxes: (N, M, 4) XYXY, padded.
            gt_labels: (N, M) in 0..K-1 (padding is never read).

        Returns:
            ({"loss_cls": (), "loss_box": (), "loss": ()}, ImbalanceStats)
        """
        n, r, k = cls_logits.shape
        if gt_boxes.shape[1] == 0:  # no box in the whole batch: one dummy slot that no anchor matches
            gt_boxes = gt_boxes.new_zeros((n, 1, 4))
            gt_labels = gt_labels.new_zeros((n, 1))
        positive = matches >= 0  # (N, R)
        valid = matches != IGNORE  # (N, R)
        safe = matches.clamp(min=0)  # (N, R) index into the M boxes
        labels = anchor_labels(matches, gt_labels, k)  # (N, R), K means "no class"
        per_anchor = classification_loss_per_anchor if self.implementation == "reference" else focal_loss_per_anchor
        anchor_loss = per_anchor(cls_logits, labels, valid, self.alpha, self.gamma)  # (N, R)
        counted = torch.ones_like(positive)  # (N, R)
        if self.cls_loss == "ohem":
            counted = self._ohem_keep(anchor_loss.detach(), positive, valid)
            anchor_loss = anchor_loss * counted

        num_pos = positive.sum()
        norm = self._normalizer(num_pos)
        loss_cls = anchor_loss.sum() / norm

        matched_boxes = torch.gather(gt_boxes, 1, safe[..., None].expand(n, r, 4))[positive]  # (P, 4)
        pos_deltas = box_deltas[positive].float()  # (P, 4)
        pos_anchors = anchors[None].expand(n, r, 4)[positive]  # (P, 4)
        if self.box_loss == "giou":
            pred = self.box_coder.decode(pos_deltas, pos_anchors)
            loss_box = generalized_box_iou_loss(pred, matched_boxes.float(), reduction="sum")
        else:
            target_deltas = self.box_coder.encode(pos_anchors, matched_boxes)
            beta = 0.0 if self.box_loss == "l1" else self.smooth_l1_beta
            if beta == 0.0:
                loss_box = F.l1_loss(pos_deltas, target_deltas, reduction="sum")
            else:
                loss_box = F.smooth_l1_loss(pos_deltas, target_deltas, beta=beta, reduction="sum")
        loss_box = loss_box / norm

        parts = {"loss_cls": loss_cls, "loss_box": loss_box}
        for name, value in parts.items():
            if not torch.isfinite(value):
                detail = "the head's logits are not finite" if not torch.isfinite(cls_logits).all() else ""
                if name == "loss_box" and not torch.isfinite(box_deltas).all():
                    detail = "the head's box deltas are not finite"
                raise NonFiniteLossError(name, detail)
        parts["loss"] = loss_cls + loss_box
        if self.guided_loss_scaling:
            parts = guided_loss_scaling(parts)
        return parts, ImbalanceStats(cls_logits, anchor_loss, positive, valid, counted, self.alpha, self.gamma)

    def _ohem_keep(self, anchor_loss: Tensor, positive: Tensor, valid: Tensor) -> Tensor:
        """(N, R) bool: positives plus, per image, the ratio x #positives (at least 1) hardest negatives."""
        negative = valid & ~positive
        neg_loss = torch.where(negative, anchor_loss, torch.full_like(anchor_loss, -1.0))
        order = neg_loss.argsort(dim=1, descending=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
        quota = (positive.sum(1, keepdim=True) * self.ohem_neg_pos_ratio).clamp(min=1)  # (N, 1)
        return positive | (negative & (rank < quota))
