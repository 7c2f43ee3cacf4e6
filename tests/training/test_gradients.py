"""GradientStats: the loss parts' gradient norms per parameter group and the easy negatives' share,
against hand computations; training untouched; the CSV of a short fit through the CLI."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from detector.cli import run_cli
from detector.model import build_retinanet
from detector.model.matcher import BACKGROUND, IGNORE
from detector.training.gradients import COLUMNS, GROUPS, GradientStats, gradient_figure, gradient_rows, read_gradient_csv

from .conftest import TINY

SIZE, K = 128, 3


def _model(**overrides):
    torch.manual_seed(0)
    config = dict(num_classes=K, backbone="resnet18", fpn_channels=16, head_convs=1, head_group_norm=True,
                  anchor_sizes=(16, 32, 64, 128, 256), min_size=SIZE, max_size=SIZE)
    return build_retinanet(**{**config, **overrides}).train()


def _batch():
    g = torch.Generator().manual_seed(1)
    boxes = torch.tensor([[[10.0, 12.0, 40.0, 44.0], [60.0, 50.0, 100.0, 110.0], [0, 0, 0, 0]],
                          [[70.0, 20.0, 90.0, 36.0], [0, 0, 0, 0], [0, 0, 0, 0]]])
    return {"images": torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8, generator=g), "boxes": boxes,
            "labels": torch.tensor([[0, 2, 0], [1, 0, 0]]), "valid": torch.tensor([[True, True, False],
                                                                                   [True, False, False]])}


def _by_hand(model, batch, easy_only: bool = False):
    """(loss_cls, loss_box) from torchvision's focal loss and F.smooth_l1_loss on the matcher's labels;
    with easy_only, loss_cls summed over the easy-negative terms only (target 0, logit < 0)."""
    c = model.config
    out = model(batch["images"])
    matches = model.matcher(batch["boxes"], batch["valid"], out.anchors)  # (N, R)
    positive, valid = matches >= 0, matches != IGNORE
    targets = torch.zeros_like(out.cls_logits)
    n_idx, r_idx = positive.nonzero(as_tuple=True)
    targets[n_idx, r_idx, batch["labels"][n_idx, matches[n_idx, r_idx]]] = 1.0
    alpha = -1 if c.alpha is None else c.alpha
    gamma = c.gamma if c.cls_loss == "focal" else 0.0
    elem = sigmoid_focal_loss(out.cls_logits, targets, alpha=alpha, gamma=gamma)  # (N, R, K)
    keep = valid[..., None] & ((targets == 0) & (out.cls_logits < 0) if easy_only else True)
    num_pos = max(int(positive.sum()), 1)
    loss_cls = (elem * keep).sum() / num_pos
    matched = batch["boxes"][n_idx, matches[n_idx, r_idx]]
    target_deltas = model.criterion.box_coder.encode(out.anchors[r_idx], matched)
    loss_box = F.smooth_l1_loss(out.box_deltas[positive], target_deltas, beta=c.smooth_l1_beta, reduction="sum") / num_pos
    if c.guided_loss_scaling:  # the full loss's scale, also for its easy part
        full_cls = (elem * valid[..., None]).sum() / num_pos
        loss_cls = loss_cls * (loss_box / full_cls).detach()
    return loss_cls, loss_box


def _norms(model, loss):
    out = {}
    for group, name in GROUPS.items():
        params = list(model.get_submodule(name).parameters())
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        out[group] = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads if g is not None))
    return out


@pytest.mark.parametrize("overrides", [{"cls_loss": "focal"}, {"cls_loss": "ce", "alpha": None},
                                       {"cls_loss": "ce", "alpha": None, "guided_loss_scaling": True}])
def test_gradient_norms_match_the_loss_written_out_by_hand(overrides):
    model, batch = _model(**overrides), _batch()
    rows = {r["group"]: r for r in gradient_rows(model, batch)}
    loss_cls, loss_box = _by_hand(model, batch)
    easy_cls, _ = _by_hand(model, batch, easy_only=True)
    cls, box, easy = _norms(model, loss_cls), _norms(model, loss_box), _norms(model, easy_cls)
    assert set(rows) == {"backbone", "fpn", "cls_subnet", "box_subnet"}
    for group, row in rows.items():
        assert row["cls_grad_norm"] == pytest.approx(cls[group], rel=1e-4, abs=1e-12)
        assert row["box_grad_norm"] == pytest.approx(box[group], rel=1e-4, abs=1e-12)
        assert row["easy_neg_grad_norm"] == pytest.approx(easy[group], rel=1e-4, abs=1e-12)
        assert row["loss_cls"] == pytest.approx(float(loss_cls), rel=1e-5)
        assert row["loss_box"] == pytest.approx(float(loss_box), rel=1e-5)
    assert rows["box_subnet"]["cls_grad_norm"] == 0 and math.isnan(rows["box_subnet"]["easy_neg_share"])
    assert rows["cls_subnet"]["box_grad_norm"] == 0 and rows["backbone"]["box_grad_norm"] > 0
    assert rows["fpn"]["easy_neg_share"] == pytest.approx(easy["fpn"] / cls["fpn"], rel=1e-4)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _dneg(x: float, alpha, gamma: float) -> float:
    """|d/dx| of a target-0 term, -(1 - alpha) p^gamma log(1 - p), p = sigmoid(x)."""
    p, w = _sigmoid(x), 1.0 if alpha is None else 1 - alpha
    return w * (p ** (gamma + 1) - gamma * p**gamma * (1 - p) * math.log(1 - p))


def _dpos(x: float, alpha, gamma: float) -> float:
    """|d/dx| of a target-1 term, -alpha (1 - p)^gamma log(p)."""
    p, w = _sigmoid(x), 1.0 if alpha is None else alpha
    return w * ((1 - p) ** (gamma + 1) - gamma * (1 - p) ** gamma * p * math.log(p))


LOGITS = (1.0, -1.0, -3.0)  # class 0 hard for negatives; classes 1 and 2 easy negatives


@pytest.mark.parametrize("cls_loss, alpha, gamma", [("ce", None, 0.0), ("focal", 0.25, 2.0)])
def test_easy_negative_share_of_set_logits(cls_loss, alpha, gamma):
    """With the predictor's weights 0 and its biases set, every anchor has the logits LOGITS: the
    share at the logits is a sum of the formula's derivatives over counted terms."""
    model, batch = _model(cls_loss=cls_loss, alpha=alpha, gamma=gamma), _batch()
    predictor = model.head.classification_head.cls_logits
    with torch.no_grad():
        predictor.weight.zero_()
        predictor.bias.copy_(torch.tensor(LOGITS).repeat(predictor.bias.numel() // K))
    out = model(batch["images"])
    matches = model.matcher(batch["boxes"], batch["valid"], out.anchors)
    negatives = int((matches == BACKGROUND).sum())
    n_idx, r_idx = (matches >= 0).nonzero(as_tuple=True)
    pos_labels = batch["labels"][n_idx, matches[n_idx, r_idx]].tolist()
    easy = negatives * sum(_dneg(x, alpha, gamma) for x in LOGITS if x < 0)
    total = negatives * sum(_dneg(x, alpha, gamma) for x in LOGITS)
    for label in pos_labels:
        easy += sum(_dneg(x, alpha, gamma) for k, x in enumerate(LOGITS) if k != label and x < 0)
        total += _dpos(LOGITS[label], alpha, gamma) + sum(_dneg(x, alpha, gamma) for k, x in enumerate(LOGITS)
                                                          if k != label)
    assert pos_labels and negatives > 0
    rows = gradient_rows(model, batch)
    assert rows[0]["easy_neg_logit_share"] == pytest.approx(easy / total, rel=1e-4)
    if cls_loss == "ce":  # plain CE: the easy negatives' share is large ...
        assert easy / total > 0.3
    else:  # ... and focal loss cuts it: the gradient moves to the hard terms
        assert easy / total < 0.1


def test_focal_loss_gives_easy_negatives_less_of_the_gradient_than_ce():
    batch = _batch()
    ce = {r["group"]: r for r in gradient_rows(_model(cls_loss="ce", alpha=None), batch)}
    focal = {r["group"]: r for r in gradient_rows(_model(cls_loss="focal"), batch)}
    assert focal["cls_subnet"]["easy_neg_logit_share"] < ce["cls_subnet"]["easy_neg_logit_share"]
    for group in ("backbone", "fpn", "cls_subnet"):
        assert focal[group]["easy_neg_share"] < ce[group]["easy_neg_share"]


# ------------------------------------------------------------------------------------------------
# A short fit through the CLI, with and without the callback.

STEPS = 20


def _fit(root, run_dir, *extra):
    args = ["fit", "--config", "configs/synthetic.yaml", "--data.root", str(root),
            "--trainer.default_root_dir", str(run_dir), "--trainer.logger.init_args.save_dir", str(run_dir),
            "--checkpoint.dirpath", str(run_dir / "ckpt"), *TINY, "--trainer.max_steps", str(STEPS),
            "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0", *extra]
    assert run_cli(args) == 0
    return torch.load(run_dir / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def two_fits(tiny_synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("gradients")
    csv = out / "with" / "gradients.csv"
    plain = _fit(tiny_synthetic, out / "without")
    measured = _fit(tiny_synthetic, out / "with", "--trainer.callbacks+=detector.training.gradients.GradientStats",
                    f"--trainer.callbacks.path={csv}")
    return plain, measured, csv


def test_the_callback_leaves_training_bit_identical(two_fits):
    plain, measured, _ = two_fits
    assert plain.keys() == measured.keys()
    for name, value in plain.items():
        assert torch.equal(value, measured[name]), name  # weights and buffers (BatchNorm statistics)


def test_a_fit_writes_a_row_per_group_at_the_prior_init_and_every_tenth(two_fits, tmp_path):
    _, _, csv = two_fits
    with open(csv, newline="") as f:
        assert tuple(next(iter(f)).strip().split(",")) == COLUMNS
    table = read_gradient_csv(csv)
    for group in GROUPS:
        assert [r["step"] for r in table[group]] == list(range(0, STEPS + 1, STEPS // 10))
        assert [r["fraction"] for r in table[group]] == pytest.approx([r["step"] / STEPS for r in table[group]])
        assert {r["loss"] for r in table[group]} == {"focal gamma 2 alpha 0.25"}
    fpn = table["fpn"]
    assert all(r["cls_grad_norm"] > 0 and r["box_grad_norm"] > 0 and 0 <= r["easy_neg_logit_share"] <= 1 for r in fpn)
    assert sum(len(rows) for rows in table.values()) == len(GROUPS) * 11  # nothing else in the file
    fig = gradient_figure([csv, csv], ["run a", "run b"], title="tiny")
    assert len(fig.axes) == len(GROUPS) + 1 and fig.axes[0].get_title() == "backbone: gradient norm"
    assert len(fig.axes[0].lines) == 4  # two runs x (loss_cls, loss_box)


def test_the_script_writes_the_png(two_fits, tmp_path):
    from tests.data.test_data_scripts import _run

    _, _, csv = two_fits
    result = _run("scripts/gradient_stats.py", str(csv), "--out", str(tmp_path / "g.png"), "--title", "tiny")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_fraction_is_validated():
    with pytest.raises(ValueError, match="every_fraction"):
        GradientStats("x.csv", every_fraction=0)
