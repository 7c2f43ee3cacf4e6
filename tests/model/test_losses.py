import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as tv_focal

from detector.model import BACKGROUND, IGNORE, IMPLEMENTATIONS, NonFiniteLossError, RetinaNetLoss, sigmoid_focal_loss


@pytest.fixture(params=IMPLEMENTATIONS)
def Loss(request):
    """RetinaNetLoss with its classification loss from the rule or from the fast path: each test runs both."""
    return functools.partial(RetinaNetLoss, implementation=request.param)


def _logit(p):
    return math.log(p / (1 - p))


@pytest.mark.parametrize(
    "p, ce, fl", [(0.9, 0.10536, 0.0010536), (0.95, 0.05129, 0.00012823), (0.2, 1.60944, 1.03004)]
)
def test_positive_values_from_the_formula(p, ce, fl):
    x = torch.tensor([_logit(p)])
    y = torch.ones(1)
    assert sigmoid_focal_loss(x, y, alpha=None, gamma=0.0).item() == pytest.approx(ce, rel=1e-4)
    assert sigmoid_focal_loss(x, y, alpha=1.0, gamma=2.0).item() == pytest.approx(fl, rel=1e-4)


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (None, 2.0), (0.75, 0.0), (0.5, 0.5), (0.25, 5.0)])
def test_equals_torchvision_in_value_and_gradient(alpha, gamma):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(64, 7, generator=g) * 3).requires_grad_()
    targets = (torch.rand(64, 7, generator=g) < 0.1).float()
    ours = sigmoid_focal_loss(logits, targets, alpha, gamma)
    (grad_ours,) = torch.autograd.grad(ours.sum(), logits)
    ref = tv_focal(logits, targets, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction="none")
    (grad_ref,) = torch.autograd.grad(ref.sum(), logits)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(grad_ours, grad_ref)


def test_gamma_zero_without_alpha_is_bce_gradients_too():
    logits = torch.randn(100, 3).requires_grad_()
    targets = (torch.rand(100, 3) < 0.3).float()
    ours = sigmoid_focal_loss(logits, targets, alpha=None, gamma=0.0)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    torch.testing.assert_close(ours, bce)
    torch.testing.assert_close(torch.autograd.grad(ours.sum(), logits)[0], torch.autograd.grad(bce.sum(), logits)[0])


def _setup(k=3):
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0], [0.0, 10.0, 10.0, 20.0], [5.0, 5.0, 15.0, 15.0]])
    gt_boxes = torch.tensor([[[0.0, 0.0, 11.0, 10.0], [0.0, 0.0, 0.0, 0.0]], [[10.0, 0.0, 20.0, 12.0], [0.0, 10.0, 10.0, 20.0]]])
    gt_labels = torch.tensor([[2, -1], [0, 1]])
    matches = torch.tensor([[0, BACKGROUND, BACKGROUND, IGNORE], [BACKGROUND, 0, 1, BACKGROUND]])
    return anchors, gt_boxes, gt_labels, matches


def test_normalised_by_positives_of_the_whole_batch_and_ignore_adds_nothing(Loss):
    anchors, gt_boxes, gt_labels, matches = _setup()
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 3, generator=g)
    deltas = torch.randn(2, 4, 4, generator=g) * 0.1
    loss = Loss(3, alpha=0.25, gamma=2.0, box_loss="l1")
    parts, stats = loss(logits, deltas, anchors, matches, gt_boxes, gt_labels)
    # expected, anchor by anchor: targets one-hot for positives, zeros for background, ignored dropped
    targets = torch.zeros(2, 4, 3)
    targets[0, 0, 2] = 1
    targets[1, 1, 0] = 1
    targets[1, 2, 1] = 1
    keep = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    expected_cls = tv_focal(logits[keep], targets[keep], alpha=0.25, gamma=2.0, reduction="sum") / 3
    assert parts["loss_cls"].item() == pytest.approx(expected_cls.item(), rel=1e-6)
    from torchvision.models.detection._utils import BoxCoder
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    t0 = coder.encode_single(gt_boxes[0, :1], anchors[:1])
    t1 = coder.encode_single(gt_boxes[1], anchors[1:3])
    expected_box = ((deltas[0, :1] - t0).abs().sum() + (deltas[1, 1:3] - t1).abs().sum()) / 3
    assert parts["loss_box"].item() == pytest.approx(expected_box.item(), rel=1e-6)
    assert parts["loss"].item() == pytest.approx(expected_cls.item() + expected_box.item(), rel=1e-6)
    assert (stats.positives, stats.negatives, stats.ignored) == (1.5, 2.0, 0.5)
    # changing the logits of the ignored anchor changes nothing
    logits2 = logits.clone()
    logits2[0, 3] = 50.0
    assert loss(logits2, deltas, anchors, matches, gt_boxes, gt_labels)[0]["loss_cls"].item() == pytest.approx(
        parts["loss_cls"].item(), rel=1e-6)


def test_empty_ground_truth_gives_zero_box_loss_and_all_background(Loss):
    anchors, _, _, _ = _setup()
    logits = torch.full((1, 4, 3), -4.0, requires_grad=True)
    deltas = torch.randn(1, 4, 4, requires_grad=True)
    matches = torch.full((1, 4), BACKGROUND)
    parts, stats = Loss(3)(logits, deltas, anchors, matches, torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.int64))
    assert parts["loss_box"].item() == 0.0
    # divided by max(1, 0); float64 reference, float32 roundings of the sum's terms allowed for
    expected = tv_focal(logits.detach().double(), torch.zeros(1, 4, 3, dtype=torch.float64), reduction="sum").item()
    assert parts["loss_cls"].item() == pytest.approx(expected, rel=1e-5)
    assert stats.positives == 0 and stats.negatives == 4 and stats.neg_loss_share == pytest.approx(1.0)
    parts["loss"].backward()
    assert torch.equal(deltas.grad, torch.zeros_like(deltas))


def test_non_finite_outputs_are_reported_by_part(Loss):
    anchors, gt_boxes, gt_labels, matches = _setup()
    logits = torch.zeros(2, 4, 3)
    logits[1, 2, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="loss_cls.*logits") as info:
        Loss(3)(logits, torch.zeros(2, 4, 4), anchors, matches, gt_boxes, gt_labels)
    assert info.value.part == "loss_cls"
    deltas = torch.zeros(2, 4, 4)
    deltas[0, 0, 1] = float("inf")
    with pytest.raises(NonFiniteLossError, match="loss_box") as info:
        Loss(3)(torch.zeros(2, 4, 3), deltas, anchors, matches, gt_boxes, gt_labels)
    assert info.value.part == "loss_box"


def test_imbalance_statistics_split_easy_and_hard_negatives(Loss):
    anchors, gt_boxes, gt_labels, matches = _setup()
    logits = torch.full((2, 4, 3), -3.0)
    logits[1, 3, 0] = 2.0  # a hard negative (p > 0.5)
    loss = Loss(3, cls_loss="ce", alpha=None)
    parts, stats = loss(logits, torch.zeros(2, 4, 4), anchors, matches, gt_boxes, gt_labels)
    elem = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    pos_terms = [(0, 0, 2), (1, 1, 0), (1, 2, 1)]
    targets = torch.zeros_like(logits)
    for i in pos_terms:
        targets[i] = 1
    elem = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    neg = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 1]], dtype=torch.bool)
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    total = elem[valid].sum()
    assert stats.neg_loss_share == pytest.approx((elem[neg].sum() / total).item(), rel=1e-5)
    hard = elem[1, 3, 0]
    assert stats.easy_neg_loss_share == pytest.approx(((elem[neg].sum() - hard) / total).item(), rel=1e-5)


def test_ohem_keeps_positives_and_three_hardest_negatives_per_positive(Loss):
    r = 20
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(r, 1)
    matches = torch.full((1, r), BACKGROUND)
    matches[0, 0] = 0
    logits = torch.linspace(-6, 1, r).view(1, r, 1).clone()
    gt = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    parts, _ = Loss(1, cls_loss="ohem", alpha=None, ohem_neg_pos_ratio=3)(
        logits, torch.zeros(1, r, 4), anchors, matches, gt, torch.tensor([[0]]))
    targets = torch.zeros(1, r, 1)
    targets[0, 0] = 1
    elem = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")[0, :, 0]
    expected = elem[0] + elem[-3:].sum()  # the positive and the 3 negatives with the largest logits
    assert parts["loss_cls"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_ema_normaliser(Loss):
    anchors, gt_boxes, gt_labels, matches = _setup()
    loss = Loss(3, normalizer_momentum=0.5)
    loss.ema_positives.fill_(7.0)
    logits = torch.zeros(2, 4, 3)
    parts, _ = loss(logits, torch.zeros(2, 4, 4), anchors, matches, gt_boxes, gt_labels)
    assert loss.ema_positives.item() == pytest.approx(0.5 * 7 + 0.5 * 3)
    plain, _ = Loss(3)(logits, torch.zeros(2, 4, 4), anchors, matches, gt_boxes, gt_labels)
    assert parts["loss_cls"].item() == pytest.approx(plain["loss_cls"].item() * 3 / 5, rel=1e-6)


def test_bad_settings(Loss):
    with pytest.raises(ValueError):
        Loss(3, cls_loss="hinge")
    with pytest.raises(ValueError):
        Loss(3, alpha=1.5)
    with pytest.raises(ValueError):
        Loss(3, gamma=-1)


def test_imbalance_statistics_wait_until_read(Loss):
    """Computing them syncs with the device: a step that does not log them must not pay for it."""
    anchors, gt_boxes, gt_labels, matches = _setup()
    _, stats = Loss(3)(torch.zeros(2, 4, 3), torch.zeros(2, 4, 4), anchors, matches, gt_boxes, gt_labels)
    assert "_values" not in stats.__dict__  # nothing computed yet
    assert stats.as_dict("x/")["x/positives"] == 1.5 and "_values" in stats.__dict__


def test_easy_share_never_exceeds_the_negative_share(Loss):
    """Every negative easy: the two shares are equal, and the easy one is never above by a rounding."""
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(500, 1)
    logits = -torch.rand(4, 500, 7, generator=torch.Generator().manual_seed(5)) * 6 - 0.01
    matches = torch.full((4, 500), BACKGROUND)
    _, stats = Loss(7)(logits, torch.zeros(4, 500, 4), anchors, matches, torch.zeros(4, 0, 4),
                       torch.zeros(4, 0, dtype=torch.int64))
    assert stats.neg_loss_share == pytest.approx(1.0)
    assert stats.easy_neg_loss_share <= stats.neg_loss_share
    assert stats.easy_neg_loss_share == pytest.approx(1.0, rel=1e-6)


def test_focal_imbalance_statistics_from_the_formula_by_hand(Loss):
    """Counts and shares against the focal formula written out element by element in float64."""
    anchors, gt_boxes, gt_labels, matches = _setup()
    logits = torch.tensor([[[-2.0, -1.0, 0.5], [0.2, -3.0, -0.5], [-1.5, 1.0, -2.5], [4.0, 4.0, 4.0]],
                           [[-0.3, 0.0, -4.0], [1.5, -1.0, -2.0], [-2.0, 0.7, 0.3], [2.0, -0.1, -6.0]]])
    _, stats = Loss(3, alpha=0.25, gamma=2.0)(logits, torch.zeros(2, 4, 4), anchors, matches, gt_boxes, gt_labels)
    kind = {(0, 0): 2, (1, 1): 0, (1, 2): 1, (0, 3): None}  # positive anchors' classes; anchor (0, 3) ignored
    total = neg = easy = 0.0
    for i in range(2):
        for r in range(4):
            if (i, r) in kind and kind[(i, r)] is None:
                continue
            for c in range(3):
                x = logits[i, r, c].item()
                p = 1 / (1 + math.exp(-x))
                target = 1 if kind.get((i, r)) == c else 0
                p_t = p if target else 1 - p
                term = (0.25 if target else 0.75) * (1 - p_t) ** 2 * -math.log(p_t)
                total += term
                if (i, r) not in kind:
                    neg += term
                    easy += term if x < 0 else 0.0
    assert (stats.positives, stats.negatives, stats.ignored) == (1.5, 2.0, 0.5)
    assert stats.neg_loss_share == pytest.approx(neg / total, rel=1e-5)
    assert stats.easy_neg_loss_share == pytest.approx(easy / total, rel=1e-5)
    assert 0 < stats.easy_neg_loss_share < stats.neg_loss_share  # both kinds of negatives present


def test_guided_loss_scaling_in_the_loss_from_the_formula(Loss):
    """Sampling-Free: loss_cls becomes w * plain loss_cls with w = loss_box / loss_cls taken as a
    constant, so its value is the box loss's and its gradient the plain one's times w."""
    anchors, gt_boxes, gt_labels, matches = _setup()
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 4, 3, generator=g)
    deltas = torch.randn(2, 4, 4, generator=g) * 0.3
    plain_logits, guided_logits = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    plain, _ = Loss(3, cls_loss="ce", alpha=None)(plain_logits, deltas, anchors, matches, gt_boxes, gt_labels)
    guided, _ = Loss(3, cls_loss="ce", alpha=None, guided_loss_scaling=True)(
        guided_logits, deltas, anchors, matches, gt_boxes, gt_labels)
    w = plain["loss_box"].item() / plain["loss_cls"].item()
    assert guided["loss_box"].item() == pytest.approx(plain["loss_box"].item(), rel=1e-6)
    assert guided["loss_cls"].item() == pytest.approx(plain["loss_cls"].item() * w, rel=1e-5)
    assert guided["loss"].item() == pytest.approx(2 * plain["loss_box"].item(), rel=1e-5)
    guided["loss"].backward()
    plain["loss_cls"].backward()
    torch.testing.assert_close(guided_logits.grad, w * plain_logits.grad, rtol=1e-5, atol=1e-7)
