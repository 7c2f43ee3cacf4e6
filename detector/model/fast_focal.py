"""Fast path of the classification loss: `losses.classification_loss_per_anchor` in one sweep.

Shape symbols: N images, R anchors, K classes.

The rule is `losses.sigmoid_focal_loss` (torchvision's formula) on one-hot targets, summed over the
K classes of each anchor; `losses.classification_loss_per_anchor` writes it so, and the tests hold
this module equal to it and to torchvision. Written with tensor ops over the whole (N, R, K) block
that formula makes many passes over memory forward and backward, each allocating a block as large
as the logits. This computes the same values with few passes, and the gradient on the way (it is
cheap once the sigmoid and the cross-entropy are there), so backward is one multiplication.

Per element, with p = sigmoid(x), the targets of a sigmoid detector (one-hot on the anchor's
class for positives, zero otherwise) and the weights w0 = 1 - alpha, w1 = alpha:

    t = 0:  FL = w0 * ce0 * p^gamma,  ce0 = x - logsigmoid(x) = softplus(x)
            dFL/dx = w0 * p^gamma * (gamma * (1 - p) * ce0 + p)
    t = 1:  FL = w1 * ce1 * (1 - p)^gamma,  ce1 = -logsigmoid(x) = softplus(-x)
            dFL/dx = -w1 * (1 - p)^gamma * (gamma * p * ce1 + (1 - p))

Both softplus terms come from the sigmoid (see `_sigmoid_parts`). alpha=None means no weighting
(w0 = w1 = 1); gamma=0 gives (alpha-balanced) cross-entropy. Accuracy against float64 and the
speed of each path: docs/benchmarks.md (scripts/bench_parts.py).

Two ways to run it, the same formulas (`_sigmoid_parts`, `_target0_terms`):
- eager, in slices: the bulk computed as if every target were 0, the few positive elements then
  overwritten. On CPU a slice holds CPU_SLICE_ELEMENTS elements, so that each op is split over the
  intra-op threads and its temporaries stay in cache; on CUDA the whole block is one slice.
- compiled (torch.compile of `_fused`: every element's target chosen with `torch.where`, one loop
  that reads the logits once and writes the gradient once). By default ("auto") it runs on CPU,
  for training, on blocks of at least COMPILE_MIN_ELEMENTS logits, where its one-off compile is
  paid back within a few hundred steps. If compiling fails (no C++ compiler, say), a warning says
  so once and the eager path runs.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

#: Elements of one eager slice on CPU: large enough to split over threads, small enough for cache.
CPU_SLICE_ELEMENTS = 1 << 18
#: Logits from which "auto" compiles on CPU: below it the one-off compile is not paid back.
COMPILE_MIN_ELEMENTS = 1 << 22
#: The path, module-wide (`settings` sets it for a block): True/False the compiled or the eager one,
#: None "auto" (the module doc's rule), production's.
COMPILED: bool | None = None


@contextmanager
def settings(*, compiled: bool | None = None, slice_elements: int | None = None):
    """Within the block: COMPILED = compiled, and CPU_SLICE_ELEMENTS when given."""
    global COMPILED, CPU_SLICE_ELEMENTS
    saved = COMPILED, CPU_SLICE_ELEMENTS
    COMPILED = compiled
    CPU_SLICE_ELEMENTS = slice_elements if slice_elements is not None else CPU_SLICE_ELEMENTS
    try:
        yield
    finally:
        COMPILED, CPU_SLICE_ELEMENTS = saved


def _sigmoid_parts(z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """p = sigmoid(z), 1 - p and log(sigmoid(|z|)) = log(max(p, 1 - p)), float32.

    softplus(z) = max(z, 0) - log(sigmoid(|z|)) and softplus(-z) = max(-z, 0) - log(sigmoid(|z|)):
    the cross-entropies of both targets from one log, of a number in [0.5, 1], so never of 0. Its
    absolute error is about one rounding of 1 - p (6e-8), a large relative error only where the
    softplus is itself that small (|z| > 14); where p rounds to 1 (z > 16.6), softplus(z) is
    exactly z. With the sigmoid, which the loss needs anyway, cheaper than F.softplus.
    """
    p = torch.sigmoid(z)
    one_minus_p = 1 - p
    return p, one_minus_p, torch.maximum(p, one_minus_p).log_()


def _pow(x: Tensor, gamma: float) -> Tensor:
    return x * x if gamma == 2.0 else x.pow(gamma)


def _target0_terms(z: Tensor, p: Tensor, one_minus_p: Tensor, log_sig_abs: Tensor, weight: float | None,
                   gamma: float, grad_out: Tensor | None = None, need_grad: bool = True
                   ) -> tuple[Tensor, Tensor | None]:
    """FL and dFL/dz (None without need_grad) of float32 logits z whose target is 0, from
    `_sigmoid_parts(z)`, the gradient into grad_out if given. Target 1 is target 0 at -z:
    `_target0_terms(-z, 1 - p, p, ...)`, the gradient negated."""
    ce = z.clamp(min=0).sub_(log_sig_abs)  # softplus(z) = binary_cross_entropy_with_logits(z, 0)
    qg = _pow(p, gamma) if weight is None else _pow(p, gamma).mul_(weight)
    if not need_grad:
        return ce * qg, None
    return ce * qg, torch.addcmul(p, one_minus_p, ce, value=gamma, out=grad_out).mul_(qg)


def _positive_terms(z: Tensor, weight: float | None, gamma: float) -> tuple[Tensor, Tensor]:
    """FL and dFL/dz of float32 logits z whose target is 1."""
    p, one_minus_p, log_sig_abs = _sigmoid_parts(z)
    term, grad = _target0_terms(-z, one_minus_p, p, log_sig_abs, weight, gamma)
    return term, -grad


def _eager(x: Tensor, labels: Tensor, alpha: float | None, gamma: float, slice_elements: int,
           need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """(rows, K) logits, (rows,) labels -> FL summed per row (rows,), dFL/dx (rows, K) or None."""
    rows, k = x.shape
    neg_weight = 1.0 - alpha if alpha is not None else None
    loss = torch.empty(rows, dtype=torch.float32, device=x.device)
    grad = torch.empty((rows, k), dtype=torch.float32, device=x.device) if need_grad else None

    # Positive elements (row, class), sorted by row, and their exact terms.
    pos_rows = torch.nonzero((labels >= 0) & (labels < k)).squeeze(1)  # as `_fused`: other labels are background
    pos_cls = labels[pos_rows]
    pos_x = x[pos_rows, pos_cls].float()
    pos_loss, pos_grad = _positive_terms(pos_x, alpha, gamma)

    step = rows if x.device.type != "cpu" else max(1, slice_elements // k)
    starts = list(range(0, rows, step))
    bounds = torch.searchsorted(pos_rows, torch.tensor(starts + [rows], device=x.device)).tolist()
    for i, start in enumerate(starts):
        stop = min(rows, start + step)
        z = x[start:stop].float()
        term, _ = _target0_terms(z, *_sigmoid_parts(z), neg_weight, gamma, grad[start:stop] if need_grad else None,
                                 need_grad)
        a, b = bounds[i], bounds[i + 1]
        local = (pos_rows[a:b] - start, pos_cls[a:b])  # this slice's positive elements
        term[local] = pos_loss[a:b]
        if need_grad:
            grad[start:stop][local] = pos_grad[a:b]
        torch.sum(term, dim=1, out=loss[start:stop])
    return loss, grad


def _fused(x: Tensor, labels: Tensor, alpha: float | None, gamma: float) -> tuple[Tensor, Tensor]:
    """As `_eager` with need_grad, every element at once: written for torch.compile, which makes it one loop."""
    z = x.float()
    target = labels[:, None] == torch.arange(z.shape[1], device=z.device)  # (rows, K) one-hot
    p, one_minus_p, log_sig_abs = _sigmoid_parts(z)
    neg_term, neg_grad = _target0_terms(z, p, one_minus_p, log_sig_abs, 1.0 - alpha if alpha is not None else None, gamma)
    pos_term, pos_grad = _target0_terms(-z, one_minus_p, p, log_sig_abs, alpha, gamma)
    return torch.where(target, pos_term, neg_term).sum(1), torch.where(target, -pos_grad, neg_grad)


_compiled_fused = None  # torch.compile(_fused), made on first use; False once compiling has failed


def _run_compiled(x: Tensor, labels: Tensor, alpha: float | None, gamma: float):
    """`_fused` compiled, or None (with a warning, once) where torch.compile does not work."""
    global _compiled_fused
    try:
        if _compiled_fused is None:
            _compiled_fused = torch.compile(_fused, dynamic=True)
        return _compiled_fused(x, labels, alpha, gamma)
    except torch.OutOfMemoryError:
        raise  # not the compiler's failure: the eager path would need the same memory
    except Exception as e:  # noqa: BLE001 - any compiler failure: the eager path computes the same
        _compiled_fused = False
        # stacklevel 5: the caller of focal_loss_per_anchor (through forward and Function.apply)
        warnings.warn(f"focal loss: torch.compile failed, using the eager path from now on ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''})", RuntimeWarning, stacklevel=5)
        return None


def use_compiled(logits: Tensor, need_grad: bool = True) -> bool:
    """Whether the compiled path runs: the "auto" rule of the module doc (COMPILED None), or as
    COMPILED True/False forces it; never once compiling has failed in this process (the eager path runs)."""
    if _compiled_fused is False:
        return False
    if COMPILED is not None:
        return COMPILED
    return need_grad and logits.device.type == "cpu" and logits.numel() >= COMPILE_MIN_ELEMENTS


class _FocalLossPerAnchor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, valid: Tensor, alpha: float | None, gamma: float) -> Tensor:
        n, r, k = logits.shape
        x = logits.detach().reshape(n * r, k)
        flat_labels = labels.reshape(n * r)
        need_grad = ctx.needs_input_grad[0]
        out = _run_compiled(x, flat_labels, alpha, gamma) if use_compiled(logits, need_grad) else None
        loss, grad = out if out is not None else _eager(x, flat_labels, alpha, gamma, CPU_SLICE_ELEMENTS, need_grad)
        invalid = torch.nonzero(~valid.reshape(n * r)).squeeze(1)
        loss[invalid] = 0.0
        if need_grad:
            grad[invalid] = 0.0
        ctx.grad = grad if need_grad else None  # the compiled path computes it anyway
        ctx.shape, ctx.dtype = logits.shape, logits.dtype
        return loss.view(n, r)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor):
        grad = ctx.grad
        if grad is None:
            raise RuntimeError("focal_loss_per_anchor: backward through the same loss twice is not supported")
        ctx.grad = None  # computed once, scaled in place, handed over
        grad.mul_(grad_loss.reshape(-1, 1).float())
        return grad.view(ctx.shape).to(ctx.dtype), None, None, None, None


def focal_loss_per_anchor(
    logits: Tensor, labels: Tensor, valid: Tensor, alpha: float | None = 0.25, gamma: float = 2.0,
) -> Tensor:
    """Sigmoid focal loss summed over classes, per anchor.

    Args:
        logits: (N, R, K) classification logits (any float dtype; computed in float32).
        labels: (N, R) int64: the class 0..K-1 of a positive anchor, K for "no class".
        valid: (N, R) bool: False for ignored anchors, whose loss and gradient are 0.
        alpha, gamma: as `losses.sigmoid_focal_loss` (alpha=None: no weighting).
    The path (compiled or eager, slice size): COMPILED and CPU_SLICE_ELEMENTS, see `settings`.

    Returns:
        (N, R) float32, differentiable w.r.t. logits: the sum over the K classes of
        sigmoid_focal_loss(logits, one_hot(labels)), 0 where not valid; equal to
        `losses.classification_loss_per_anchor`.
    """
    return _FocalLossPerAnchor.apply(logits, labels, valid, alpha, float(gamma))
