"""Fused sigmoid focal loss: per-anchor sums and the gradient in one sweep over the logits.

Shape symbols: N images, R anchors, K classes.

`losses.sigmoid_focal_loss` is the readable element-wise formula (torchvision's); written with
tensor ops over the whole (N, R, K) block it makes about 30 passes over memory forward and
backward, each allocating a block as large as the logits. This computes the same values with
few passes, and the gradient on the way (it is cheap once the sigmoid and the cross-entropy are
there), so backward is one multiplication.

Per element, with p = sigmoid(x), the targets of a sigmoid detector (one-hot on the anchor's
class for positives, zero otherwise) and the weights w0 = 1 - alpha, w1 = alpha:

    t = 0:  FL = w0 * ce0 * p^gamma,  ce0 = x - logsigmoid(x) = softplus(x)
            dFL/dx = w0 * p^gamma * (gamma * (1 - p) * ce0 + p)
    t = 1:  FL = w1 * ce1 * (1 - p)^gamma,  ce1 = -logsigmoid(x) = softplus(-x)
            dFL/dx = -w1 * (1 - p)^gamma * (gamma * p * ce1 + (1 - p))

Both softplus terms come from the sigmoid (see `_sigmoid_parts`), and the bulk takes q = p rather than
torchvision's 1 - (1 - p). Against float64 over x in [-40, 40] this is as accurate as torchvision's
float32 formula (largest absolute error 1.9e-6, torchvision's 2.4e-6, at gamma 2, alpha .25; 5.5e-7
and 4.8e-7 for plain CE); the tests hold it within 1e-5 of torchvision's. alpha=None means no
weighting (w0 = w1 = 1); gamma=0 gives (alpha-balanced) cross-entropy.

Two ways to run it, the same formulas (`_sigmoid_parts`, `_target0_terms`):
- eager, in slices: the bulk computed as if every target were 0, the few positive elements then
  overwritten; about 15 ops a slice. On CPU a slice holds 2^18 elements (1 MiB of float32): each
  op is large enough to be split over the intra-op threads and its temporaries stay in cache
  (2 threads, batch 8 x 49,104 anchors x 91 classes, forward and backward: 0.61 s at 2^15
  elements, 0.29 s at 2^17, 0.27 s at 2^18, 0.35 s at 2^20, measured before the current
  formulas); on CUDA the whole block is one slice.
- compiled (torch.compile of `_fused`: every element's target chosen with `torch.where`, one
  loop that reads the logits once and writes the gradient once): 1.8x faster than the eager path
  forward and backward on that block (0.20 -> 0.11 s, scripts/bench_parts.py --focal-against,
  docs/bench/parts_cpu.json). By default ("auto") it runs on CPU, for training, on blocks of at
  least COMPILE_MIN_ELEMENTS logits (VOC's 20 classes at batch 8 and 512 px; COCO's from two
  512 px images; not the synthetic default, 0.5 M, nor the tests' small cases), where its one-off
  compile (7-9 s in a fresh process, 3-4 s from the cache torch keeps on disk, once per alpha and
  gamma) is paid back within a few hundred steps. CUDA keeps the eager path unless asked (not
  measured here: no GPU). If compiling fails (no C++ compiler, say), a warning says so once and
  the eager path runs.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

#: Elements of one eager slice on CPU, see the module doc.
CPU_SLICE_ELEMENTS = 1 << 18
#: Logits from which "auto" compiles on CPU, see the module doc.
COMPILE_MIN_ELEMENTS = 1 << 22


def _sigmoid_parts(z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """p = sigmoid(z), 1 - p and log(sigmoid(|z|)) = log(max(p, 1 - p)), float32.

    softplus(z) = max(z, 0) - log(sigmoid(|z|)) and softplus(-z) = max(-z, 0) - log(sigmoid(|z|)):
    the cross-entropies of both targets from one log, of a number in [0.5, 1], so never of 0. Its
    absolute error is about one rounding of 1 - p (6e-8), a large relative error only where the
    softplus is itself that small (|z| > 14); where p rounds to 1 (z > 16.6), softplus(z) is
    exactly z. With the sigmoid (which the loss needs anyway) 1.6x faster than F.softplus on CPU
    (scripts/bench_parts.py).
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
           need_grad: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """(rows, K) logits, (rows,) labels -> FL summed per row, its easy part, dFL/dx (or None); valid ignored."""
    rows, k = x.shape
    neg_weight = 1.0 - alpha if alpha is not None else None
    loss = torch.empty(rows, dtype=torch.float32, device=x.device)
    easy = torch.empty(rows, dtype=torch.float32, device=x.device)
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
        term.masked_fill_(z >= 0, 0.0)[local] = 0.0  # easy: target 0 and logit < 0
        torch.sum(term, dim=1, out=easy[start:stop])
    return loss, easy, grad


def _fused(x: Tensor, labels: Tensor, alpha: float | None, gamma: float) -> tuple[Tensor, Tensor, Tensor]:
    """As `_eager` with need_grad, every element at once: written for torch.compile, which makes it one loop."""
    z = x.float()
    target = labels[:, None] == torch.arange(z.shape[1], device=z.device)  # (rows, K) one-hot
    p, one_minus_p, log_sig_abs = _sigmoid_parts(z)
    neg_term, neg_grad = _target0_terms(z, p, one_minus_p, log_sig_abs, 1.0 - alpha if alpha is not None else None, gamma)
    pos_term, pos_grad = _target0_terms(-z, one_minus_p, p, log_sig_abs, alpha, gamma)
    term = torch.where(target, pos_term, neg_term)
    easy = torch.where(target | (z >= 0), 0.0, term)
    return term.sum(1), easy.sum(1), torch.where(target, -pos_grad, neg_grad)


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


def use_compiled(logits: Tensor, compiled: bool | None, need_grad: bool = True) -> bool:
    """Whether the compiled path runs: the "auto" rule (compiled=None) of the module doc, or as
    True/False force it; never once compiling has failed in this process (the eager path runs)."""
    if _compiled_fused is False:
        return False
    if compiled is not None:
        return compiled
    return need_grad and logits.device.type == "cpu" and logits.numel() >= COMPILE_MIN_ELEMENTS


class _FocalLossPerAnchor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, valid: Tensor, alpha: float | None, gamma: float,
                slice_elements: int, compiled: bool | None) -> tuple[Tensor, Tensor]:
        n, r, k = logits.shape
        x = logits.detach().reshape(n * r, k)
        flat_labels = labels.reshape(n * r)
        need_grad = ctx.needs_input_grad[0]
        out = _run_compiled(x, flat_labels, alpha, gamma) if use_compiled(logits, compiled, need_grad) else None
        loss, easy, grad = out if out is not None else _eager(x, flat_labels, alpha, gamma, slice_elements, need_grad)
        invalid = torch.nonzero(~valid.reshape(n * r)).squeeze(1)
        loss[invalid] = 0.0
        easy[invalid] = 0.0
        if need_grad:
            grad[invalid] = 0.0
        ctx.grad = grad if need_grad else None  # the compiled path computes it anyway
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
        return grad.view(ctx.shape).to(ctx.dtype), None, None, None, None, None, None


def focal_loss_per_anchor(
    logits: Tensor, labels: Tensor, valid: Tensor, alpha: float | None = 0.25, gamma: float = 2.0,
    *, slice_elements: int = CPU_SLICE_ELEMENTS, compiled: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Sigmoid focal loss summed over classes, per anchor.

    Args:
        logits: (N, R, K) classification logits (any float dtype; computed in float32).
        labels: (N, R) int64: the class 0..K-1 of a positive anchor, K for "no class".
        valid: (N, R) bool: False for ignored anchors, whose loss and gradient are 0.
        alpha, gamma: as `losses.sigmoid_focal_loss` (alpha=None: no weighting).
        slice_elements: elements per slice of the eager path on CPU.
        compiled: True/False: the torch.compile'd or the eager path; None: "auto" (module doc).

    Returns:
        (loss (N, R) float32, differentiable w.r.t. logits: the sum over the K classes of
        sigmoid_focal_loss(logits, one_hot(labels)), 0 where not valid;
        easy (N, R) float32, detached: the part of it from classes with target 0 and logit < 0)
    """
    return _FocalLossPerAnchor.apply(logits, labels, valid, alpha, float(gamma), slice_elements, compiled)
