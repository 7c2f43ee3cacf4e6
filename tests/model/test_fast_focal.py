"""The fast per-anchor focal loss (detector/model/fast_focal.py) against torchvision's element-wise
one and against the readable rule (losses.classification_loss_per_anchor).

Eager and compiled paths alike; the compiled one is compiled once a process for each (alpha, gamma),
which takes seconds, so its tests keep to three of them.
"""

import shutil
import warnings

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss as tv_focal

from detector.model import classification_loss_per_anchor, easy_loss_per_anchor
from detector.model import fast_focal as focal
from detector.model.fast_focal import focal_loss_per_anchor

COMPILED_CASES = [(0.25, 2.0), (None, 0.0), (0.25, 0.5)]  # the default, plain CE, a non-integer power
# torch.compile on CPU writes C++; without a compiler the loss falls back to eager (tested below)
needs_cxx = pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                               reason="torch.compile on CPU needs a C++ compiler")


def _loss(*args, **path):
    """focal_loss_per_anchor on the path `path` names (fast_focal.settings: compiled, slice_elements)."""
    with focal.settings(**path):
        return focal_loss_per_anchor(*args)


def _case(n=3, r=257, k=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, r, k, generator=g) * 4
    labels = torch.randint(0, k, (n, r), generator=g)
    labels[torch.rand(n, r, generator=g) < 0.9] = k  # 90% background ("no class" = K)
    valid = torch.rand(n, r, generator=g) > 0.1  # 10% ignored
    return logits, labels, valid


def _reference(logits, labels, valid, alpha, gamma):
    k = logits.shape[-1]
    targets = (labels[..., None] == torch.arange(k)).float()
    per_elem = tv_focal(logits, targets, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction="none")
    per_elem = per_elem * valid[..., None]
    easy = (per_elem * (targets == 0) * (logits < 0)).sum(-1)
    return per_elem.sum(-1), easy


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (None, 0.0), (0.75, 0.0), (0.25, 0.5), (0.25, 1.0), (0.25, 5.0)])
@pytest.mark.parametrize("slice_elements", [1, 50, 32767])  # one row a slice, slices cutting rows, one slice
def test_equals_torchvision_summed_over_classes_in_value_and_gradient(alpha, gamma, slice_elements):
    _assert_equals_torchvision(alpha, gamma, slice_elements=slice_elements)


def _assert_equals_torchvision(alpha, gamma, **path):
    """Loss, easy part and gradient (under a non-uniform upstream gradient) of focal_loss_per_anchor
    with the `path` keywords against torchvision's element-wise loss summed over classes."""
    logits, labels, valid = _case()
    x = logits.clone().requires_grad_()
    loss = _loss(x, labels, valid, alpha, gamma, **path)
    easy = easy_loss_per_anchor(x, labels, valid, alpha, gamma)  # computed apart from the loss
    weights = torch.rand_like(loss)  # a non-uniform upstream gradient
    (grad,) = torch.autograd.grad((loss * weights).sum(), x)

    y = logits.clone().requires_grad_()
    ref, ref_easy = _reference(y, labels, valid, alpha, gamma)
    (ref_grad,) = torch.autograd.grad((ref * weights).sum(), y)

    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(easy, ref_easy.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)
    assert not easy.requires_grad
    assert (loss[~valid] == 0).all() and (grad[~valid] == 0).all()

    z = logits.clone().requires_grad_()  # the rule the package runs with implementation="reference"
    rule = classification_loss_per_anchor(z, labels, valid, alpha, gamma)
    (rule_grad,) = torch.autograd.grad((rule * weights).sum(), z)
    torch.testing.assert_close(loss, rule, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, rule_grad, rtol=1e-5, atol=1e-7)


def test_hand_computed_single_anchor():
    # one positive of class 1 with p = 0.2 next to a negative class with p = 0.2 (alpha 0.25, gamma 2):
    # positive: 0.25 * 0.8^2 * -log(0.2) = 0.257510; negative: 0.75 * 0.2^2 * -log(0.8) = 0.0066943
    logit = torch.log(torch.tensor(0.2 / 0.8))
    x = torch.full((1, 1, 2), float(logit))
    loss = focal_loss_per_anchor(x, torch.tensor([[1]]), torch.tensor([[True]]), 0.25, 2.0)
    easy = easy_loss_per_anchor(x, torch.tensor([[1]]), torch.tensor([[True]]), 0.25, 2.0)
    assert loss.item() == pytest.approx(0.257510 + 0.0066943, rel=1e-4)
    assert easy.item() == pytest.approx(0.0066943, rel=1e-4)  # the negative class, p < 0.5


def test_bf16_logits_give_float32_loss_and_bf16_gradient():
    logits, labels, valid = _case(r=64)
    x = logits.bfloat16().requires_grad_()
    loss = focal_loss_per_anchor(x, labels, valid)
    loss.sum().backward()
    assert loss.dtype == torch.float32 and x.grad.dtype == torch.bfloat16
    ref, _ = _reference(logits.bfloat16().float(), labels, valid, 0.25, 2.0)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)


@needs_cxx
@pytest.mark.parametrize("alpha, gamma", COMPILED_CASES)
def test_compiled_equals_torchvision_in_value_and_gradient(alpha, gamma):
    _assert_equals_torchvision(alpha, gamma, compiled=True)
    assert callable(focal._compiled_fused)  # it did compile, not fall back


@needs_cxx
def test_compiled_under_bf16_autocast_with_bf16_logits():
    logits, labels, valid = _case(r=64)
    x = logits.bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = _loss(x, labels, valid, compiled=True)
    assert callable(focal._compiled_fused)
    loss.sum().backward()
    assert loss.dtype == torch.float32 and x.grad.dtype == torch.bfloat16
    y = logits.bfloat16().float().requires_grad_()
    ref, _ = _reference(y, labels, valid, 0.25, 2.0)
    ref.sum().backward()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, y.grad.bfloat16())  # the float32 gradient rounded once


def test_auto_compiles_large_cpu_training_blocks_only():
    big = torch.empty(1, focal.COMPILE_MIN_ELEMENTS, 1)
    small = torch.empty(1, focal.COMPILE_MIN_ELEMENTS - 1, 1)
    assert focal.use_compiled(big) and not focal.use_compiled(small)
    assert not focal.use_compiled(big, need_grad=False)  # no gradient: the eager path skips it
    assert not focal.use_compiled(big.to("meta"))  # only CPU by default
    with focal.settings(compiled=True):
        assert focal.use_compiled(small)
    with focal.settings(compiled=False):
        assert not focal.use_compiled(big)


def test_a_failing_compiler_warns_once_and_the_eager_path_gives_the_same(monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")
        return run

    monkeypatch.setattr(focal, "_compiled_fused", None)
    monkeypatch.setattr(torch, "compile", broken_compile)
    logits, labels, valid = _case()
    with pytest.warns(RuntimeWarning, match="torch.compile failed, using the eager path.*InvalidCxxCompiler"):
        loss = _loss(logits, labels, valid, compiled=True)
    assert focal._compiled_fused is False
    with focal.settings(compiled=True):
        assert not focal.use_compiled(logits)  # from now on the eager path, even when asked
    eager = _loss(logits, labels, valid, compiled=False)
    assert torch.equal(loss, eager)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        _loss(logits, labels, valid, compiled=True)


@pytest.mark.parametrize("alpha, gamma, compiled", [(0.25, 2.0, False), (None, 0.0, False), (0.25, 5.0, False),
                                                     pytest.param(0.25, 2.0, True, marks=needs_cxx),
                                                     pytest.param(None, 0.0, True, marks=needs_cxx)])
def test_extreme_logits_against_float64(alpha, gamma, compiled):
    # from far below (easy negatives, p ~ 1e-44) to far above (p rounds to 1: softplus must be x,
    # not log(0)); every value a negative class, one row of positives
    x = torch.linspace(-100.0, 100.0, 2001).view(1, -1, 1).repeat(1, 1, 2)
    labels = torch.full((1, x.shape[1]), 2)
    labels[0, ::7] = 0
    valid = torch.ones(1, x.shape[1], dtype=torch.bool)
    xg = x.clone().requires_grad_()
    loss = _loss(xg, labels, valid, alpha, gamma, compiled=compiled)
    assert callable(focal._compiled_fused) or not compiled
    loss.sum().backward()
    y = x.double().requires_grad_()
    ref, _ = _reference(y, labels, valid, alpha, gamma)
    ref.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(xg.grad).all()
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xg.grad.double(), y.grad, rtol=1e-5, atol=1e-7)


def test_labels_outside_0_to_k_minus_1_are_background_on_both_paths():
    logits, labels, valid = _case(r=32)
    k = logits.shape[-1]
    odd = labels.clone()
    odd[labels == k] = -1  # not a class: background, as K is (never class K-1 by wrap-around)
    for compiled in (False, True):
        loss, easy = _loss(logits, odd, valid, compiled=compiled), easy_loss_per_anchor(logits, odd, valid)
        ref, ref_easy = (_loss(logits, labels, valid, compiled=compiled),
                         easy_loss_per_anchor(logits, labels, valid))
        torch.testing.assert_close(loss, ref, rtol=1e-6, atol=0)
        torch.testing.assert_close(easy, ref_easy, rtol=1e-6, atol=0)
