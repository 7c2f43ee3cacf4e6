"""Fused sigmoid focal loss: per-anchor sums and the gradient in one sweep over the logits.

Shape symbols: N images, R anchors, K classes.

`losses.sigmoid_focal_loss` is the readable element-wise formula (torchvision's); written with
tensor ops over the whole (N, R, K) block it makes about 30 passes over memory forward and
backward, each allocating a block as large as the logits. This computes the same values with
a few passes over slices small enough to stay in cache, and the gradient on the way (it is
cheap once the sigmoid and the cross-entropy are there), so backward is one multiplication.

Per element, with p = sigmoid(x), the targets of a sigmoid detector (one-hot on the anchor's
class for positives, zero otherwise) and the weights w0 = 1 - alpha, w1 = alpha:

    t = 0:  FL = w0 * ce0 * p^gamma,  ce0 = x - logsigmoid(x) = softplus(x)
            dFL/dx = w0 * p^gamma * (gamma * (1 - p) * ce0 + p)
    t = 1:  FL = w1 * ce1 * (1 - p)^gamma,  ce1 = -logsigmoid(x) = softplus(-x)
            dFL/dx = -w1 * (1 - p)^gamma * (gamma * p * ce1 + (1 - p))

The positive elements follow torchvision's `sigmoid_focal_loss` operation by operation. The
bulk, computed as if every target were 0 (the few positive elements are then overwritten), takes
q = p rather than torchvision's 1 - (1 - p) and softplus from p (see `_softplus`): 15 passes over
a slice instead of 24, 1.5x faster forward and backward (batch 8 x 49,104 anchors x 91 classes,
2 threads: 0.27 -> 0.18 s). Against float64 over x in [-40, 40] it is as accurate as
torchvision's float32 formula: largest absolute error 1.9e-6 (torchvision 2.4e-6) at gamma 2,
alpha .25, and 5.5e-7 (4.8e-7) for plain CE; the tests hold it within 1e-5 of torchvision's.
alpha=None means no weighting (w0 = w1 = 1); gamma=0 gives (alpha-balanced) cross-entropy.

On CPU a slice holds 2^18 elements (1 MiB of float32): each op is large enough to be split over
the intra-op threads and its temporaries stay in cache (measured with 2 threads, batch 8 x 49,104
anchors x 91 classes, forward and backward: 0.61 s at 2^15 elements, 0.29 s at 2^17, 0.27 s at
2^18, 0.35 s at 2^20); on CUDA the whole block is one slice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

#: Elements of one slice on CPU, see the module doc.
CPU_SLICE_ELEMENTS = 1 << 18


def _softplus(x: Tensor, p: Tensor, one_minus_p: Tensor) -> Tensor:
    """softplus(x) = binary_cross_entropy_with_logits(x, 0), float32, from p = sigmoid(x) and 1 - p.

    max(x, 0) - log(sigmoid(|x|)), where sigmoid(|x|) = max(p, 1 - p) lies in [0.5, 1], so the
    log is never of 0: its absolute error is about one rounding of 1 - p (6e-8), a large relative
    error only where softplus(x) is itself that small (x < -14); for x > 16.6 (p rounds to 1) it
    is exactly x. Four vectorised passes: 5x faster than F.softplus on CPU (2^18 elements: 0.26 ms
    against 1.3 ms).
    """
    return x.clamp(min=0).sub_(torch.maximum(p, one_minus_p).log_())


def _pow(x: Tensor, gamma: float) -> Tensor:
    return x * x if gamma == 2.0 else x.pow(gamma)


def _positive_terms(x: Tensor, alpha: float | None, gamma: float) -> tuple[Tensor, Tensor]:
    """FL and dFL/dx of float32 logits x whose target is 1."""
    p = torch.sigmoid(x)
    ce = -F.logsigmoid(x)  # binary_cross_entropy_with_logits(x, 1)
    one_minus_p = 1 - p
    qg = _pow(one_minus_p, gamma)
    loss = ce * qg
    grad = torch.addcmul(one_minus_p, p, ce, value=gamma).mul_(qg).neg_()
    if alpha is not None:
        loss = loss.mul_(alpha)
        grad = grad.mul_(alpha)
    return loss, grad


class _FocalLossPerAnchor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, valid: Tensor, alpha: float | None, gamma: float,
                slice_elements: int) -> tuple[Tensor, Tensor]:
        n, r, k = logits.shape
        x = logits.detach().reshape(n * r, k)
        rows = x.shape[0]
        need_grad = ctx.needs_input_grad[0]
        neg_weight = 1.0 - alpha if alpha is not None else None
        loss = torch.empty(rows, dtype=torch.float32, device=x.device)
        easy = torch.empty(rows, dtype=torch.float32, device=x.device)
        grad = torch.empty((rows, k), dtype=torch.float32, device=x.device) if need_grad else None

        # Positive elements (row, class), sorted by row, and their exact terms.
        flat_labels = labels.reshape(rows)
        pos_rows = torch.nonzero(flat_labels < k).squeeze(1)
        pos_cls = flat_labels[pos_rows]
        pos_loss, pos_grad = _positive_terms(x[pos_rows, pos_cls].float(), alpha, gamma)

        step = rows if x.device.type != "cpu" else max(1, slice_elements // k)
        starts = list(range(0, rows, step))
        bounds = torch.searchsorted(pos_rows, torch.tensor(starts + [rows], device=x.device)).tolist()
        for i, start in enumerate(starts):
            stop = min(rows, start + step)
            z = x[start:stop].float()
            p = torch.sigmoid(z)
            one_minus_p = 1 - p
            ce = _softplus(z, p, one_minus_p)  # binary_cross_entropy_with_logits(z, 0)
            qg = _pow(p, gamma)
            if neg_weight is not None:
                qg.mul_(neg_weight)
            term = ce * qg
            a, b = bounds[i], bounds[i + 1]
            if b > a:
                local_rows = pos_rows[a:b] - start
                term[local_rows, pos_cls[a:b]] = pos_loss[a:b]
            torch.sum(term, dim=1, out=loss[start:stop])
            torch.sum(term.masked_fill_(z >= 0, 0.0), dim=1, out=easy[start:stop])
            if need_grad:
                g = grad[start:stop]
                torch.addcmul(p, one_minus_p, ce, value=gamma, out=g).mul_(qg)
                if b > a:
                    g[local_rows, pos_cls[a:b]] = pos_grad[a:b]

        invalid = torch.nonzero(~valid.reshape(rows)).squeeze(1)
        loss[invalid] = 0.0
        easy[invalid] = 0.0
        if need_grad:
            grad[invalid] = 0.0
        # Easy part of positive elements: a positive target is never an easy negative.
        easy_fix = torch.where(x[pos_rows, pos_cls] < 0, pos_loss, torch.zeros_like(pos_loss))
        easy.index_add_(0, pos_rows, -easy_fix * valid.reshape(rows)[pos_rows])
        ctx.grad = grad
        ctx.shape, ctx.dtype = logits.shape, logits.dtype
        loss, easy = loss.view(n, r), easy.view(n, r)
        ctx.mark_non_differentiable(easy)
        return loss, easy

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor, grad_easy: Tensor):
        grad = ctx.grad
        if grad is None:
            raise RuntimeError("focal_loss_per_anchor: backward through the same loss twice is not supported")
        ctx.grad = None  # computed once, scaled in place, handed over
        grad.mul_(grad_loss.reshape(-1, 1).float())
        return grad.view(ctx.shape).to(ctx.dtype), None, None, None, None, None


def focal_loss_per_anchor(
    logits: Tensor, labels: Tensor, valid: Tensor, alpha: float | None = 0.25, gamma: float = 2.0,
    *, slice_elements: int = CPU_SLICE_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """Sigmoid focal loss summed over classes, per anchor.

    Args:
        logits: (N, R, K) classification logits (any float dtype; computed in float32).
        labels: (N, R) int64: the class 0..K-1 of a positive anchor, K for "no class".
        valid: (N, R) bool: False for ignored anchors, whose loss and gradient are 0.
        alpha, gamma: as `losses.sigmoid_focal_loss` (alpha=None: no weighting).
        slice_elements: elements per slice on CPU.

    Returns:
        (loss (N, R) float32, differentiable w.r.t. logits: the sum over the K classes of
        sigmoid_focal_loss(logits, one_hot(labels)), 0 where not valid;
        easy (N, R) float32, detached: the part of it from classes with target 0 and logit < 0)
    """
    return _FocalLossPerAnchor.apply(logits, labels, valid, alpha, float(gamma), slice_elements)
