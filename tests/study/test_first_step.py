"""The closed-form loss at the prior init, against torchvision's sigmoid_focal_loss on the same logits."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from detector.check_data import neg_terms_per_pos
from detector.study.first_step import closed_form, first_row, loss_at_prior
from detector.study.plan import build_lab


@pytest.mark.parametrize("gamma, alpha", [(0.0, None), (2.0, 0.25), (1.0, 0.5)])
@pytest.mark.parametrize("neg_terms", [4, 235, 11829])
def test_loss_at_prior_matches_torchvision_on_logits_at_the_prior_bias(gamma, alpha, neg_terms):
    prior = 0.01
    logits = torch.full((1 + neg_terms,), -math.log((1 - prior) / prior), dtype=torch.float64)
    targets = torch.zeros_like(logits)
    targets[0] = 1.0  # one positive term, the rest negative
    terms = sigmoid_focal_loss(logits, targets, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction="none")
    loss, share = loss_at_prior(neg_terms, prior, gamma, alpha)
    assert loss == pytest.approx(terms.sum().item(), rel=1e-9)
    assert share == pytest.approx((terms[1:].sum() / terms.sum()).item(), rel=1e-9)


def test_first_row_reads_the_first_logged_step(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("step,loss,loss_cls,loss_box,positives,negatives,neg_loss_share\n"
                    "1,8.0,7.25,0.75,2.0,100.0,0.35\n2,5.0,4.5,0.5,3.0,90.0,0.2\n")
    assert first_row(path) == {"loss_cls": 7.25, "neg_loss_share": 0.35, "positives": 2.0, "negatives": 100.0}
    assert first_row(tmp_path / "missing.csv") is None


def test_negative_terms_count_every_class_of_a_negative_anchor_and_the_others_of_a_positive_one():
    # 2 positive anchors and 100 negative ones, 5 classes: 2 positive terms, 2 * 4 + 100 * 5 negative terms
    assert neg_terms_per_pos(2.0, 100.0, 5) == (8 + 500) / 2


def test_closed_form_only_for_a_fixed_prior():
    lab = build_lab("imbalance", "/tmp/unused")
    assert closed_form(lab.variant("ce_prior"), 100.0) == loss_at_prior(100.0, 0.01)
    assert closed_form(lab.variant("focal_g2_a0.25"), 100.0) == loss_at_prior(100.0, 0.01, 2.0, 0.25)
    assert closed_form(lab.variant("sampling_free"), 100.0) is None  # prior from the data, loss rescaled
    assert closed_form(lab.variant("ce_prior"), None) is None
