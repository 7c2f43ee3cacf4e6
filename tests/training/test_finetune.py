"""Fine-tuning (--model.init_from): what is loaded, what is re-initialised, and that training starts fresh."""

import math

import pytest
import torch

from detector.checkpoint import CheckpointError, save_detector
from detector.cli import run_cli
from detector.model import RetinaNetConfig, build_retinanet
from detector.training.finetune import CLS_BIAS, CLS_WEIGHT, init_from_checkpoint, parameter_groups

from .conftest import TINY

SMALL = dict(backbone="resnet18", fpn_channels=16, head_convs=1, min_size=64, max_size=64)
A = 9  # 3 scales x 3 ratios
SOURCE_NAMES = ["circle", "square", "triangle"]


@pytest.fixture()
def source(tmp_path):
    torch.manual_seed(0)
    model = build_retinanet(RetinaNetConfig(num_classes=3, **SMALL))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # nothing left at its initial value, so a copy is recognisable
    path = save_detector(model, tmp_path / "source.ckpt", class_names=SOURCE_NAMES)
    return model, path


def test_matching_tensors_load_and_renamed_rows_are_copied(source):
    src, path = source
    torch.manual_seed(1)
    target = build_retinanet(RetinaNetConfig(num_classes=2, **SMALL))
    report = init_from_checkpoint(target, path, ["SQUARE ", "star"])  # case and spaces do not matter

    theirs, ours = src.state_dict(), target.state_dict()
    for name in ours:
        if name not in (CLS_WEIGHT, CLS_BIAS):
            assert torch.equal(ours[name], theirs[name]), name
    bias, weight = ours[CLS_BIAS], ours[CLS_WEIGHT]
    for a in range(A):  # channel a * K + k: anchor a, class k
        assert torch.equal(weight[a * 2 + 0], theirs[CLS_WEIGHT][a * 3 + 1])  # square <- source label 1
        assert bias[a * 2 + 0] == theirs[CLS_BIAS][a * 3 + 1]
        assert bias[a * 2 + 1].item() == pytest.approx(-math.log(0.99 / 0.01), abs=1e-6)  # star: the prior
    assert weight[1::2].std().item() == pytest.approx(0.01, rel=0.2)  # star's weights: the head's Gaussian init
    assert report.loaded == len(ours) - 2 and report.reinitialised == 2 and not report.skipped
    assert report.line().endswith("class rows copied 1 of 2: SQUARE ")
    assert f"{len(ours) - 2} tensors loaded, 2 re-initialised, 0 skipped" in report.line()


def test_the_same_class_list_loads_everything(source):
    src, path = source
    target = build_retinanet(RetinaNetConfig(num_classes=3, **SMALL))
    report = init_from_checkpoint(target, path, ["Circle", "square", "triangle"])
    assert report.reinitialised == 0 and report.loaded == len(src.state_dict())
    assert torch.equal(target.state_dict()[CLS_WEIGHT], src.state_dict()[CLS_WEIGHT])


def test_a_tensor_of_another_shape_is_skipped_and_counted(source):
    _, path = source
    target = build_retinanet(RetinaNetConfig(num_classes=3, **{**SMALL, "head_convs": 2}))
    before = target.state_dict()["head.regression_head.conv.1.0.weight"].clone()
    report = init_from_checkpoint(target, path, SOURCE_NAMES)
    assert "head.regression_head.conv.1.0.weight" in report.skipped
    assert torch.equal(target.state_dict()["head.regression_head.conv.1.0.weight"], before)


@pytest.mark.parametrize("change", [{"backbone": "resnet34"}, {"fpn_channels": 32}])
def test_another_architecture_is_one_line_naming_both(source, change):
    _, path = source
    target = build_retinanet(RetinaNetConfig(num_classes=3, **{**SMALL, **change}))
    with pytest.raises(CheckpointError) as err:
        init_from_checkpoint(target, path, SOURCE_NAMES)
    text = str(err.value)
    key, value = next(iter(change.items()))
    assert "\n" not in text and f"{key}={SMALL[key]}" in text and f"{key}={value}" in text


def test_backbone_lr_multiplier_applies_to_the_resnet_only():
    model = build_retinanet(RetinaNetConfig(num_classes=3, frozen_stages=2, **SMALL))
    groups = parameter_groups(model, lr=0.1, weight_decay=1e-4, backbone_lr_mult=0.25)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    for name, p in model.named_parameters():
        if not p.requires_grad:  # frozen stages: no optimizer group
            assert id(p) not in lr_of and name.startswith(("backbone.body.conv1", "backbone.body.bn1",
                                                            "backbone.body.layer1"))
            continue
        assert lr_of[id(p)] == pytest.approx(0.025 if name.startswith("backbone.body.") else 0.1), name
        assert decay_of[id(p)] == (0.0 if p.ndim <= 1 else 1e-4), name


def _fit(root, run_dir, *extra):
    return run_cli(["fit", "--config", "configs/synthetic.yaml", "--data.root", str(root),
                    "--trainer.default_root_dir", str(run_dir), "--trainer.logger.init_args.save_dir", str(run_dir),
                    "--checkpoint.dirpath", str(run_dir / "ckpt"), *TINY, *extra])


def test_fit_from_a_run_starts_fresh(tiny_synthetic, tmp_path, capsys):
    assert _fit(tiny_synthetic, tmp_path / "a", "--trainer.max_steps", "2", "--trainer.val_check_interval", "2") == 0
    last = tmp_path / "a" / "ckpt" / "last.ckpt"
    assert _fit(tiny_synthetic, tmp_path / "b", "--trainer.max_steps", "1", "--trainer.val_check_interval", "1",
                "--model.init_from", str(last), "--model.backbone_lr_mult", "0.1") == 0
    line = [x for x in capsys.readouterr().err.splitlines() if x.startswith("init_from")]
    assert len(line) == 1 and "0 re-initialised, 0 skipped" in line[0]
    state = torch.load(tmp_path / "b" / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    # a resume of the step-2 checkpoint would stop at once at step 2; a fresh start trains step 1
    assert state["global_step"] == 1
    optimizer = state["optimizer_states"][0]
    assert {s["step"].item() for s in optimizer["state"].values()} == {1.0}  # AdamW's state: one step old
    lrs = sorted({g["lr"] for g in optimizer["param_groups"]})
    assert len(lrs) == 2 and lrs[0] == pytest.approx(lrs[1] * 0.1)  # the ResNet at a tenth


def test_from_torchvision_coco_weights_person_rows_are_copied(tmp_path):
    """The README's lead: torchvision's 91-label COCO model, imported, fine-tuned onto [Person, widget]."""
    import importlib.util

    from torchvision.models.detection import retinanet_resnet50_fpn

    torch.manual_seed(0)
    tv = retinanet_resnet50_fpn(weights=None, weights_backbone=None)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    spec = importlib.util.spec_from_file_location("import_torchvision", "scripts/import_torchvision.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--src", str(tmp_path / "tv.pth"), "--out", str(tmp_path / "coco.ckpt")]) == 0
    source = torch.load(tmp_path / "coco.ckpt", map_location="cpu", weights_only=True)
    assert source["class_names"][1] == "person" and len(source["class_names"]) == 91

    target = build_retinanet(RetinaNetConfig(num_classes=2, backbone="resnet50", fpn_channels=256, p6_from="p5",
                                             freeze_bn=True))
    report = init_from_checkpoint(target, tmp_path / "coco.ckpt", ["Person", "widget"])
    assert report.rows_copied == ["Person"] and not report.skipped
    theirs = tv.state_dict()["head.classification_head.cls_logits.weight"]  # (9 * 91, 256, 3, 3)
    ours = target.state_dict()[CLS_WEIGHT]
    for a in range(A):
        assert torch.equal(ours[a * 2], theirs[a * 91 + 1])  # person is torchvision's label 1
    assert torch.equal(target.state_dict()["backbone.body.layer4.2.conv3.weight"],
                       tv.state_dict()["backbone.body.layer4.2.conv3.weight"])
