"""The imbalance lab (detector/study/lab*.py; scripts/ablate.py --preset imbalance):
Sampling-Free's loss scaling and its variants, the anchor counts against torchvision's Matcher,
the best-of-grid and tie rules by hand, and the preset end to end at a handful of steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torchvision.models.detection._utils import Matcher as TorchvisionMatcher
from torchvision.ops import box_iou

from detector.model import RetinaNetConfig, build_retinanet
from detector.model.losses import guided_loss_scaling
from detector.study.first_step import loss_at_prior
from detector.study.plan import PRESET_DIR, LabError, Study, StudyError, build_lab
from detector.study.cells import best_cells, best_of_grid, gap
from detector.study.runner import best_lrs, planned_runs, seed_variants
from detector.study.report import lab_runs, summary_markdown
from tests.study.conftest import PNG_MAGIC, run_ablate, run_tiny_lab, shrunk_lab_preset
from detector.study.records import code_version, read_rows
from detector.study.variants import parse_variant

LOSSES = build_lab("imbalance", "/tmp/unused").settings["losses"]
from tests.conftest import write_tiny_synthetic



# ---------------------------------------------------------------------------------------------
# Sampling-Free CE.


def test_guided_loss_scaling_sets_the_value_and_scales_only_the_classification_gradient():
    x = torch.tensor([0.3, -1.2, 2.0], requires_grad=True)
    y = torch.tensor([0.5, 0.1], requires_grad=True)
    plain_cls = F.binary_cross_entropy_with_logits(x, torch.tensor([1.0, 0.0, 0.0]), reduction="sum")
    box = (y**2).sum()
    parts = guided_loss_scaling({"loss_cls": plain_cls, "loss_box": box, "loss": plain_cls + box})
    assert parts["loss_cls"].item() == pytest.approx(box.item())  # the value: the box loss's
    assert parts["loss"].item() == pytest.approx(2 * box.item())
    parts["loss"].backward()
    w = box.item() / plain_cls.item()
    p = torch.sigmoid(x.detach())
    assert torch.allclose(x.grad, w * (p - torch.tensor([1.0, 0.0, 0.0])), atol=1e-6)  # BCE's gradient, x w
    assert torch.allclose(y.grad, 2 * y.detach())  # the scale carries no gradient into the box branch


def test_a_guided_model_scales_its_classification_loss_to_the_box_loss():
    torch.manual_seed(0)
    config = RetinaNetConfig(num_classes=3, backbone="resnet18", fpn_channels=16, head_convs=1, cls_loss="ce",
                             alpha=None, min_size=128, max_size=128)
    plain = build_retinanet(config)
    guided = build_retinanet(config, guided_loss_scaling=True)
    guided.load_state_dict(plain.state_dict())
    images = torch.rand(2, 3, 128, 128)
    boxes = torch.tensor([[[10.0, 10.0, 50.0, 60.0]], [[30.0, 40.0, 90.0, 100.0]]])
    labels, valid = torch.tensor([[0], [2]]), torch.ones(2, 1, dtype=torch.bool)
    p_parts, _ = plain.loss(plain(images), boxes, labels, valid)
    g_parts, _ = guided.loss(guided(images), boxes, labels, valid)
    assert g_parts["loss_box"].item() == pytest.approx(p_parts["loss_box"].item(), rel=1e-5)
    assert g_parts["loss_cls"].item() == pytest.approx(p_parts["loss_box"].item(), rel=1e-5)
    g_parts["loss_cls"].backward()
    p_parts["loss_cls"].backward()
    w = p_parts["loss_box"].item() / p_parts["loss_cls"].item()
    bias_g = guided.head.classification_head.cls_logits.bias.grad
    bias_p = plain.head.classification_head.cls_logits.bias.grad
    assert torch.allclose(bias_g, w * bias_p, rtol=1e-4, atol=1e-7)


def test_sampling_free_and_seed_variants():
    v = parse_variant("sampling_free+lr0.002+seed1", LOSSES)
    assert (v.name, v.detector["cls_loss"], v.prior_from_data, v.lr, v.seed) == (
        "sampling_free+lr0.002+seed1", "ce", True, 0.002, 1)
    assert v.detector["guided_loss_scaling"] is True and v.row()["loss"] == "sampling_free"
    assert parse_variant("ce_prior+seed3", LOSSES).seed == 3 and parse_variant("ce_prior", LOSSES).seed is None

    config = yaml.safe_load((PRESET_DIR / "quick.yaml").read_text())
    config.pop("study")
    settings = {"max_steps": 10, "evals": 1, "milestone_fractions": [0.5], "stats_images": 2, "gammas": [2.0],
                "save_models": False, "synthetic": None}
    study = Study(preset=Path("x.yaml"), config=config, settings={**settings, "foreground_prior": 2.5e-4},
                  out=Path("/tmp/out"))
    resolved = study.variant_config(v)
    assert resolved["model"]["detector"]["prior_prob"] == 2.5e-4 and resolved["model"]["lr"] == 0.002
    assert resolved["seed_everything"] == 1 and resolved["model"]["detector"]["guided_loss_scaling"] is True
    assert study.variant_config(parse_variant("ce_prior", LOSSES))["model"]["detector"]["prior_prob"] == 0.01
    with pytest.raises(StudyError, match="foreground_prior"):
        Study(preset=Path("x.yaml"), config=config, settings=settings, out=Path("/tmp/out")).variant_config(v)


# ---------------------------------------------------------------------------------------------
# The anchor counts.


def test_anchor_statistics_count_what_torchvisions_matcher_counts(tmp_path):
    from detector.check_data import anchor_statistics
    from detector.training.datamodule import datamodule_from_config

    root = write_tiny_synthetic(tmp_path / "data", num_train=2, num_val=6)
    config = yaml.safe_load((PRESET_DIR / "imbalance.yaml").read_text())
    config.pop("study")
    config["data"].update(root=str(root), min_size=128, max_size=128, num_workers=0, batch_size=4)
    config["model"]["detector"].update(min_size=128, max_size=128)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    stats = anchor_statistics(path, progress=False)

    dm = datamodule_from_config(path)
    dm.setup("validate")
    model = build_retinanet(RetinaNetConfig.from_dict({**config["model"]["detector"], "num_classes": dm.num_classes}))
    matcher = TorchvisionMatcher(0.5, 0.4, allow_low_quality_matches=True)
    pos = neg = ign = 0
    for i in range(len(dm.eval_dataset("val"))):
        batch = next(iter(dm.eval_dataloader(torch.utils.data.Subset(dm.eval_dataset("val"), [i]))))
        anchors = model(batch["images"]).anchors
        gt = batch["boxes"][0][batch["valid"][0]]
        m = matcher(box_iou(gt, anchors)) if len(gt) else torch.full((len(anchors),), -1)
        pos, neg, ign = pos + int((m >= 0).sum()), neg + int((m == -1).sum()), ign + int((m == -2).sum())
    n, k = 6, dm.num_classes
    assert stats["images"] == n and pos > 0
    assert stats["positives_per_image"] == pytest.approx(pos / n)
    assert stats["negatives_per_image"] == pytest.approx(neg / n)
    assert stats["ignored_per_image"] == pytest.approx(ign / n)
    assert stats["negatives_per_positive"] == pytest.approx(neg / pos)
    assert stats["negative_terms_per_positive_term"] == pytest.approx((neg * k + pos * (k - 1)) / pos)
    assert stats["foreground_fraction"] == pytest.approx(pos / ((pos + neg) * k))


# ---------------------------------------------------------------------------------------------
# Best of grid, gaps and ties, by hand.


def _row(level, loss, lr, seed, ap, ap_low=None, diverged=False, grid=True):
    name = f"{loss}+lr{lr:g}" + ("" if grid else f"+seed{seed}")
    return {"level": level, "optimizer": "adamw", "loss": loss, "lr": lr, "seed": seed, "AP": None if diverged else ap,
            "AP_low": ap_low, "diverged": diverged, "variant": name, "recipe": lr == 0.003, "ratio_anchor": 50.0}


def test_best_of_grid_and_the_tie_rule_by_hand():
    rows = [
        _row("dense", "ce_prior", 0.001, 0, 0.10), _row("dense", "ce_prior", 0.003, 0, 0.20),
        _row("dense", "ce_prior", 0.01, 0, None, diverged=True),
        _row("dense", "focal_g2_a0.25", 0.001, 0, 0.15), _row("dense", "focal_g2_a0.25", 0.003, 0, 0.25),
        _row("dense", "focal_g2_a0.25", 0.01, 0, 0.30),
        _row("dense", "ce_prior", 0.003, 1, 0.18, grid=False), _row("dense", "focal_g2_a0.25", 0.01, 1, 0.26, grid=False),
    ]  # fmt: skip
    cells = best_cells(rows, {("dense", "adamw"): (0.001, 0.003, 0.01)})
    ce, focal = cells[("dense", "adamw", "ce_prior")], cells[("dense", "adamw", "focal_g2_a0.25")]
    assert (ce["lr"], ce["edge"], ce["complete"]) == (0.003, False, True)
    assert (focal["lr"], focal["edge"]) == (0.01, True)  # best at the grid's end: flagged
    assert ce["recipe"]["AP"] == 0.20 and sorted(focal["by_seed"]) == [0, 1]
    g = gap(cells, "dense", "adamw", "focal_g2_a0.25", "ce_prior")
    assert g["per_seed"] == pytest.approx({0: 0.10, 1: 0.08})
    assert g["mean"] == pytest.approx(0.09) and g["spread"] == pytest.approx(0.04)  # focal's 0.30 vs 0.26
    assert g["verdict"] == "ahead"
    rows[-1] = _row("dense", "focal_g2_a0.25", 0.01, 1, 0.10, grid=False)  # seed 1 collapses: spread 0.20
    g = gap(best_cells(rows), "dense", "adamw", "focal_g2_a0.25", "ce_prior")
    assert g["mean"] == pytest.approx(0.01) and g["verdict"] == "tie"
    assert gap(best_cells(rows[:6]), "dense", "adamw", "focal_g2_a0.25", "ce_prior")["verdict"] == "one seed"
    near_zero = [_row("sparse", "ce_prior", 0.003, 0, 0.000), _row("sparse", "focal_g2_a0.25", 0.003, 0, 0.008),
                 _row("sparse", "ce_prior", 0.003, 1, 0.002, grid=False),
                 _row("sparse", "focal_g2_a0.25", 0.003, 1, 0.009, grid=False)]
    g = gap(best_cells(near_zero), "sparse", "adamw", "focal_g2_a0.25", "ce_prior")
    assert g["mean"] == pytest.approx(0.0075) and g["spread"] == pytest.approx(0.002)  # beyond the spread, but:
    assert g["floor"] and g["verdict"] == "noise floor"  # both means (0.001, 0.0085) below one AP point
    near_zero[-1] = _row("sparse", "focal_g2_a0.25", 0.003, 1, 0.013, grid=False)  # focal's mean 0.0105: off the floor
    assert gap(best_cells(near_zero), "sparse", "adamw", "focal_g2_a0.25", "ce_prior")["verdict"] == "ahead"
    incomplete = best_cells(rows[:2] + rows[3:5], {("dense", "adamw"): (0.001, 0.003, 0.01)})
    assert not incomplete[("dense", "adamw", "ce_prior")]["complete"]
    outside = rows[:6] + [_row("dense", "ce_prior", 0.0003, 0, 0.50)]  # a pilot below the grid, better than all
    ce = best_cells(outside, {("dense", "adamw"): (0.001, 0.003, 0.01)})[("dense", "adamw", "ce_prior")]
    assert (ce["lr"], ce["edge"], ce["complete"]) == (0.003, False, True)  # not a candidate: outside the grid
    assert best_cells(outside)[("dense", "adamw", "ce_prior")]["lr"] == 0.0003  # no grid given: every lr seen


def test_best_of_grid_on_a_grid_with_a_diverged_run():
    finished = lambda ap: {"AP": ap, "diverged": False}  # noqa: E731
    diverged = {"AP": None, "diverged": True}
    # a diverged run scores 0 but loses the tie to a finished 0.000 run, even at a smaller lr
    assert best_of_grid({0.001: diverged, 0.003: finished(0.0), 0.01: finished(0.0)}) == 0.003
    assert best_of_grid({0.001: finished(0.0), 0.003: diverged}) == 0.001
    assert best_of_grid({0.001: diverged, 0.003: finished(0.01), 0.01: finished(0.02)}) == 0.01
    assert best_of_grid({0.001: finished(0.0), 0.003: {"AP": None, "diverged": False}}) == 0.001  # no AP: below 0


def test_the_seeds_stage_trains_the_lr_the_report_calls_best(tmp_path):
    """One rule: on a grid where the smallest lr diverged and the rest scored 0, both pick the smallest
    finished lr (the two rules this replaced picked 0.0006, the diverged one, and 0.002)."""
    lab = build_lab("imbalance", tmp_path / "out", levels="dense", optimizers="adamw", losses="ce_prior")
    level, adamw = lab.levels[0], lab.optimizers[0]
    grid = lab.grid(level, adamw)
    assert grid[:2] == (0.0006, 0.002)
    for i, variant in enumerate(lab.grid_variants(level, adamw)):
        run = lab.cell_dir(level, adamw) / "runs" / variant.name
        run.mkdir(parents=True)
        result = {"variant": variant.name, "AP": None if i == 0 else 0.0, "AP_low": None if i == 0 else 0.0,
                  "diverged": i == 0}
        (run / "result.json").write_text(json.dumps(result))
    assert best_lrs(lab, level, adamw) == {"ce_prior": 0.002}
    assert [v.name for v in seed_variants(lab, level, adamw)] == ["ce_prior+lr0.002+seed1"]
    assert "| dense | adamw | ce_prior | 0.002 |" in summary_markdown(lab, lab_runs(lab))


def test_code_version_names_the_commit_and_a_dirty_tree(tmp_path):
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True, text=True).stdout

    def commit(path: str) -> str:
        git("add", path)
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", path)
        return git("log", "-1", "--format=%H").strip()

    assert code_version(tmp_path) == {"commit": None, "dirty": None}  # not a checkout
    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    head = commit("a.py")
    assert code_version(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "new.txt").write_text("untracked files do not count\n")
    assert code_version(tmp_path)["dirty"] is False
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "lab.json").write_text("{}\n")
    head = commit("docs/lab.json")
    (tmp_path / "docs" / "lab.json").write_text('{"commands": ["the study records its own command"]}\n')
    assert code_version(tmp_path / "docs")["dirty"] is False  # the study's records are not its code
    (tmp_path / "a.py").write_text("x = 2\n")
    assert code_version(tmp_path / "docs") == {"commit": head, "dirty": True}


def test_the_lab_refuses_unknown_levels_and_a_first_seed_that_is_not_the_grids():
    with pytest.raises(LabError, match="unknown level nope"):
        build_lab("imbalance", "/tmp/unused", levels="nope")
    with pytest.raises(LabError, match="first seed"):
        build_lab("imbalance", "/tmp/unused", seeds="1,0")
    lab = build_lab("imbalance", "/tmp/unused")
    assert [lv.name for lv in lab.levels] == ["dense", "medium", "sparse"]
    for level in lab.levels:  # the grid: >= 3 values spanning >= 10x, the recipe among them
        for opt in lab.optimizers:
            lrs = lab.grid(level, opt)
            assert len(lrs) >= 3 and max(lrs) / min(lrs) >= 10 - 1e-9 and opt.recipe_lr in lrs
            assert set(opt.lrs) <= set(lrs)  # a level's own grid extends the common one, never drops from it
    assert {o.name for o in lab.optimizers} == {"sgd", "adamw"}


def test_a_level_grid_replaces_its_optimizers_grid_for_every_loss_there(tmp_path):
    preset = yaml.safe_load((PRESET_DIR / "imbalance.yaml").read_text())
    preset["study"]["levels"][0]["lrs"] = {"sgd": [0.003, 0.01, 0.03]}
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(preset))
    lab = build_lab(path, tmp_path / "out", optimizers="sgd,adamw")
    dense, medium = lab.levels[0], lab.levels[1]
    sgd, adamw = lab.optimizers
    assert lab.grid(dense, sgd) == (0.003, 0.01, 0.03) and lab.grid(medium, sgd) == sgd.lrs
    assert lab.grid(dense, adamw) == adamw.lrs  # only the named optimizer
    assert [v.name for v in lab.grid_variants(dense, sgd)][:3] == ["ce_prior+lr0.003", "ce_prior+lr0.01",
                                                                   "ce_prior+lr0.03"]
    planned = {(lv.name, o.name, v.name) for lv, o, v in planned_runs(lab, "grid")}
    assert ("dense", "sgd", "focal_g2_a0.25+lr0.003") in planned and ("medium", "sgd", "focal_g2_a0.25+lr0.003") not in planned
    pilot = build_lab(path, tmp_path / "out", lrs="0.1")  # --lrs replaces every grid
    assert {grid for grid in pilot.grids().values()} == {(0.1,)}
    preset["study"]["levels"][0]["lrs"] = {"lamb": [0.01]}
    path.write_text(yaml.safe_dump(preset))
    with pytest.raises(LabError, match="unknown optimizer lamb"):
        build_lab(path, tmp_path / "out")


def test_shards_split_one_stage_at_a_time(tmp_path, monkeypatch, capsys):
    """A stage's run list is fixed; across stages it is not (seed runs join once a grid is
    complete), so round-robin shards of `all` would shift onto each other's runs."""
    out = tmp_path / "out"
    assert run_ablate("--preset", "imbalance", "--out", str(out), "--shard", "0/2") == 2
    assert "--stage grid or --stage seeds" in capsys.readouterr().err and not out.exists()

    launched = []
    monkeypatch.setattr("detector.study.runner.launch_shards",
                        lambda script, argv, gpus, folder: launched.append((argv, gpus)) or 0)
    monkeypatch.setattr("detector.study.report.write_lab_report", lambda lab, **kw: [])
    assert run_ablate("--preset", "imbalance", "--out", str(out), "--levels", "dense", "--gpus", "0,1") == 0
    assert [argv[argv.index("--stage") + 1] for argv, _ in launched] == ["grid", "seeds"]
    for argv, gpus in launched:
        assert gpus == ["0", "1"] and "--gpus" not in argv and argv.count("--stage") == 1
        assert argv[argv.index("--levels") + 1] == "dense"
    launched.clear()
    assert run_ablate("--preset", "imbalance", "--out", str(out), "--stage=seeds", "--gpus", "0") == 0
    assert [argv[argv.index("--stage") + 1] for argv, _ in launched] == ["seeds"]
    assert not any(a.startswith("--stage=") for a in launched[0][0])


# ---------------------------------------------------------------------------------------------
# The preset end to end.


@pytest.fixture
def tiny_lab_preset(tmp_path):
    return shrunk_lab_preset("imbalance", tmp_path)


@pytest.mark.slow
def test_the_imbalance_preset_writes_its_table_and_gap_figure(tiny_lab_preset, tmp_path):
    out = tmp_path / "out"
    rows, levels = run_tiny_lab(tiny_lab_preset, out, ("dense", "sparse"))
    assert levels["dense"]["negatives_per_positive"] < levels["sparse"]["negatives_per_positive"]
    for r in rows:
        assert r["optimizer"] == "adamw" and float(r["lr"]) == 0.002 and r["seed"] == "0" and r["diverged"] == "False"
        assert float(r["ratio_anchor"]) == pytest.approx(levels[r["level"]]["negatives_per_positive"], rel=1e-5)
        assert float(r["AP_low"]) >= float(r["AP"]) >= 0  # more low-score detections never lower COCO AP
    summary = (out / "summary.md").read_text()
    assert "## Levels" in summary and "| dense | adamw | focal_g2_a0.25 | 0.002 |" in summary
    # one seed: no spread to judge by; "noise floor" when both APs stay below one AP point (docs/ablation.md)
    ap = {(r["level"], r["loss"], key): float(r[key]) for r in rows for key in ("AP", "AP_low")}
    for level in ("dense", "sparse"):
        for key, tlabel in (("AP", "score ≥ 0.05"), ("AP_low", "score ≥ 0.001")):
            floor = max(ap[(level, "ce_prior", key)], ap[(level, "focal_g2_a0.25", key)]) < 0.01
            line = next(ln for ln in summary.splitlines()
                        if ln.startswith(f"| {level} |") and f"| adamw | focal − CE | {tlabel} |" in ln)
            assert line.endswith("| noise floor |" if floor else "| one seed |"), line
    # CE's logged loss at step 1 is the closed form at the prior init (tested against torchvision), with that
    # batch's own anchor counts: one positive term and K - 1 negative ones per positive anchor, K per negative
    first = read_rows(out / "dense_adamw" / "runs" / "ce_prior+lr0.002" / "train.csv")[0]
    pos, neg, k = float(first["positives"]), float(first["negatives"]), levels["dense"]["num_classes"]
    expected, share = loss_at_prior((neg * k + pos * (k - 1)) / pos, prior=0.01)
    assert float(first["loss_cls"]) == pytest.approx(expected, rel=0.05)
    assert float(first["neg_loss_share"]) == pytest.approx(share, rel=0.05)
    assert "## The classification loss at the first step" in summary
    for name in ("gap_vs_imbalance.png", "ap_over_steps_best.png", "first_step_loss.png", "dense_adamw/loss_cdf.png",
                 "dense_adamw/background_scores.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name

    # AP at 0.001 against the saved model evaluated outside Lightning (detector.evaluation.inference)
    from detector.checkpoint import load_detector
    from detector.evaluation.inference import evaluate_detector
    from detector.training.datamodule import datamodule_from_config

    run = out / "dense_adamw" / "runs" / "focal_g2_a0.25+lr0.002"
    model = load_detector(out / "dense_adamw" / "checkpoints" / "focal_g2_a0.25+lr0.002" / "final.pt")
    model.postprocessor.score_thresh = 0.001
    metrics = evaluate_detector(model, datamodule_from_config(run / "config.yaml"), per_class=False, progress=False)
    result = json.loads((run / "result.json").read_text())
    assert result["AP_low"] == pytest.approx(metrics["AP"], abs=1e-5)
    import subprocess  # the run records the code that trained it

    repo = Path(__file__).resolve().parents[2]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert result["commit"] == head.stdout.strip() and isinstance(result["dirty"], bool)
