"""The study's parts without training: the variants (the presets' data), overrides, the loss statistics."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from detector.study import StudyError, build_study
from detector.study.plan import load_preset, parse_overrides
from detector.study.report import ap_gain
from detector.study.stats import anchor_losses, loss_cdf, summarize, top_share
from detector.study.variants import VariantError, parse_variant, parse_variants

QUICK = load_preset("quick")[1]["losses"]


@pytest.mark.parametrize(
    "name, loss, gamma, alpha, prior",
    [
        ("ce_no_prior", "ce", 0.0, None, None),
        ("ce_prior", "ce", 0.0, None, 0.01),
        ("alpha_ce_a0.999", "ce", 0.0, 0.999, 0.01),
        ("focal_g0.5_a0.5", "focal", 0.5, 0.5, 0.01),
        ("focal_g2_a0.25", "focal", 2.0, 0.25, 0.01),
        ("ohem_1to3", "ohem", 0.0, None, 0.01),
    ],
)
def test_variant_names_stand_for_their_settings(name, loss, gamma, alpha, prior):
    v = parse_variant(name, QUICK)
    assert [v.detector[k] for k in ("cls_loss", "gamma", "alpha", "prior_prob")] == [loss, gamma, alpha, prior]
    assert parse_variant(v.name, QUICK) == v


def test_the_presets_table_1_rows_carry_the_papers_numbers():
    # the paper's Table 1 (design.md): alpha-balanced CE by alpha, focal loss by gamma at its best alpha
    alpha_ce = {0.1: 0.0, 0.25: 10.8, 0.5: 30.2, 0.9: 30.8, 0.99: 28.7, 0.999: 25.1}
    focal = {(0, 0.75): 31.1, (0.1, 0.75): 31.4, (0.2, 0.75): 31.9, (0.5, 0.5): 32.9, (1, 0.25): 33.7,
             (2, 0.25): 34.0, (5, 0.25): 32.2}
    for a, ap in alpha_ce.items():
        v = parse_variant(f"alpha_ce_a{a:g}", QUICK)
        assert (v.detector["cls_loss"], v.detector["alpha"], v.paper_ap()) == ("ce", a, ap)
    for (g, a), ap in focal.items():
        v = parse_variant(f"focal_g{g:g}_a{a:g}", QUICK)
        assert (v.detector["cls_loss"], v.detector["gamma"], v.detector["alpha"], v.paper_ap()) == ("focal", g, a, ap)
    assert parse_variant("ce_no_prior", QUICK).paper_ap() is None and parse_variant("ohem_1to3", QUICK).paper_ap() is None


def test_labelled_departures_and_bad_names():
    clipped = parse_variant("focal_g2_a0.25+clip10", QUICK)
    assert clipped.clip == 10.0 and clipped.paper_ap() is None  # not the paper's recipe: no paper number
    assert parse_variant("ce_no_prior+lr1e30", QUICK).lr == 1e30
    assert parse_variant("ce_prior+lr1.0e30", QUICK).name == "ce_prior+lr1e30"  # canonical, and no second '+'
    assert parse_variant("ce_prior+lr0.002+seed1", QUICK).seed == 1
    assert parse_variant("ohem_1to3", QUICK).detector["ohem_neg_pos_ratio"] == 3.0
    assert [v.name for v in parse_variants("all", QUICK)] == list(QUICK)
    for bad in ("focal_g3", "ce", "ce_prior+warp9", "ce_prior+lr"):
        with pytest.raises(VariantError):
            parse_variant(bad, QUICK)
    with pytest.raises(VariantError, match="twice"):
        parse_variants("ce_prior+lr0.01,ce_prior+lr1e-2", QUICK)
    with pytest.raises(VariantError, match="gama"):
        parse_variant("mine", {"mine": {"cls_loss": "focal", "gama": 2}})


def test_overrides_reach_every_variant_and_study_keys_are_refused(tiny_preset, tmp_path):
    pairs = parse_overrides(["--data.dataset", "coco", "--data.root=/data/mine",
                             "--data.voc_train_years", '["2007", "2012"]', "--model.lr", "1e-3"])
    assert pairs == [("data.dataset", "coco"), ("data.root", "/data/mine"), ("data.voc_train_years", ["2007", "2012"]),
                     ("model.lr", 0.001)]  # typed by the schema: YAML alone reads "1e-3" as a string
    for managed in ("--trainer.max_steps", "--model.detector.gamma", "--model.milestones"):
        with pytest.raises(StudyError, match="set by the study"):
            parse_overrides([managed, "1"])
    with pytest.raises(StudyError, match="unrecognized arguments: --foo.bar"):
        parse_overrides(["--foo.bar", "1"])

    study, variants = build_study(tiny_preset, tmp_path / "o", variants="ce_no_prior,focal_g2_a0.25+clip10",
                                  max_steps=90, evals=3, image_size=96, overrides=["--data.batch_size", "4"])
    ce, focal = (study.variant_config(v) for v in variants)
    for config in (ce, focal):
        assert config["data"]["batch_size"] == 4 and config["data"]["min_size"] == 96
        assert config["model"]["detector"]["max_size"] == 128  # the preset's: the image size is the data's key
        assert config["trainer"]["max_steps"] == 90 and config["trainer"]["val_check_interval"] == 30
        assert config["model"]["milestones"] == [60, 80]
        tensorboard, csv_log = config["trainer"]["logger"]
        assert tensorboard["init_args"]["name"] in ("ce_no_prior", "focal_g2_a0.25+clip10")
        assert csv_log["class_path"] == "lightning.pytorch.loggers.CSVLogger"
        assert config["trainer"]["log_every_n_steps"] == 1  # train.csv holds every step
        assert config["trainer"]["callbacks"][0]["class_path"] == "lightning.pytorch.callbacks.Timer"
    assert ce["model"]["detector"]["prior_prob"] is None and ce["trainer"]["gradient_clip_val"] is None
    assert focal["model"]["detector"]["gamma"] == 2.0 and focal["trainer"]["gradient_clip_val"] == 10.0


@pytest.mark.parametrize(
    "tokens, named",
    [
        (["--data.batchsize", "4"], "unrecognized arguments: --data.batchsize"),
        (["--data.batch_size", "four"], "data.batch_size.*int.*four"),
        (["--data.batch_size=4", "--model.lr", "fast"], "model.lr.*float.*fast"),
        # the training config reads years as strings: LightningCLI would refuse this list when the variant starts
        (["--data.voc_train_years", "[2007, 2012]"], "data.voc_train_years"),
        (["--data.batch_size"], "--data.batch_size: expected one argument"),
        (["data/mine"], "unrecognized arguments: data/mine"),
    ],
)
def test_overrides_are_checked_against_the_training_config(tokens, named):
    with pytest.raises(StudyError, match=named) as err:
        parse_overrides(tokens)
    assert "\n" not in str(err.value)


def test_loss_cdf_and_concentration_by_hand():
    losses = np.array([1.0, 3.0, 0.0, 4.0])  # sorted: 0, 1, 3, 4 of a total of 8
    assert loss_cdf(losses, np.array([0.0, 0.25, 0.5, 0.75, 1.0])).tolist() == [0.0, 0.0, 1 / 8, 4 / 8, 1.0]
    assert top_share(losses, 0.25) == 0.5 and top_share(losses, 1.0) == 1.0
    # focal loss at gamma 0 is the binary cross-entropy, summed over the K outputs of an anchor
    z = np.array([[2.0, -1.0], [0.5, 3.0]])
    assert anchor_losses(z, 0.0) == pytest.approx(np.log1p(np.exp(-z)).sum(1))
    p_t = 1 / (1 + np.exp(-z))
    assert anchor_losses(z, 2.0) == pytest.approx(((1 - p_t) ** 2 * -np.log(p_t)).sum(1))


def test_gamma_concentrates_the_negatives_loss_on_the_hard_ones():
    rng = np.random.default_rng(0)
    # mostly easy negatives (p ~ 0.001), a few hard ones: signed logits z = -x
    neg = np.concatenate([rng.normal(7.0, 1.0, (20000, 3)), rng.normal(0.0, 1.0, (200, 3))])
    pos = rng.normal(1.0, 1.0, (50, 3))
    stats = summarize({"positive": pos, "negative": neg, "positive_true": pos[:, 0], "images": 10}, own_gamma=2.0)
    top = stats["top_share"]["negative"]
    assert top["2"]["0.01"] > 0.9 > top["0"]["0.01"]  # gamma 2: the hardest 1 % carry nearly all of it
    assert stats["negatives"] == 20200 and sum(stats["score_hist"]["background"]) == 20200


def test_scores_of_confident_logits_match_torch_sigmoid_without_overflow_warnings():
    # signed logits far beyond exp's float64 range: a very confident background and a very confident miss
    neg = np.array([[800.0, 900.0], [-2.0, 5.0], [0.5, 3.0]])
    true = np.array([-800.0, 1.5, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = summarize({"positive": neg, "negative": neg, "positive_true": true, "images": 3}, own_gamma=2.0)
    bg = torch.sigmoid(-torch.tensor(neg, dtype=torch.float64).min(1).values).numpy()  # max_k p of each anchor
    assert stats["background_score_quantiles"]["50"] == pytest.approx(round(float(np.quantile(bg, 0.5)), 8))
    assert stats["background_above_inference_score_per_image"] == pytest.approx(round(float((bg >= 0.05).sum()) / 3, 3))
    assert stats["positive_score_median"] == pytest.approx(0.5)  # sigmoid(0), the median of 0, 0.818, 0.5


def test_ap_gain_over_the_last_interval_and_the_last_third_by_hand(tmp_path):
    val = tmp_path / "val.csv"
    val.write_text("step,AP\n100,0.1\n200,0.2\n300,0.25\n400,0.26\n")
    assert ap_gain(val) == pytest.approx(0.01)
    # two thirds of 400 is step 266.7: 0.2 + (0.25 - 0.2) * 66.7 / 100 = 0.2333 by linear interpolation
    assert ap_gain(val, over=1 / 3) == pytest.approx(0.26 - (0.2 + 0.05 * (400 * 2 / 3 - 200) / 100))
    val.write_text("step,AP\n300,0.25\n400,0.26\n")  # the curve does not reach back to step 266.7
    assert ap_gain(val, over=1 / 3) is None and ap_gain(val) == pytest.approx(0.01)
    val.write_text("step,AP\n400,0.26\n")
    assert ap_gain(val) is None and ap_gain(tmp_path / "missing.csv", over=1 / 3) is None
