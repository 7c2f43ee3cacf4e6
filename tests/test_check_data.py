"""`detector check-data`: coverage on a hand-built case, the anchor suggestion, the files, fit's warning."""

from __future__ import annotations

import json
import warnings

import pytest

from detector.check_data import box_records, suggest_anchors, summary
from detector.cli import run_cli
from detector.commands import main
from detector.data import COCODetection
from detector.data.transforms import build_transforms
from detector.model import RetinaNetConfig
from tests.data.fixtures import coco_json, write_coco

# One 128 x 128 image; anchors: one square per location, sizes 16..256 at strides 8..128 (P3-P7),
# centred on multiples of the stride; 16^2 + 8^2 + 4^2 + 2^2 + 1 = 341 anchors.
ONE_ANCHOR = dict(num_classes=2, backbone="resnet18", fpn_channels=16, anchor_sizes=(16, 32, 64, 128, 256),
                  anchor_scales=(1.0,), anchor_ratios=(1.0,), min_size=128, max_size=128)
HAND_BOXES = [
    # "a": 32 x 32 centred on (48, 48): the size-32 anchor there has IoU 1, no other anchor reaches 0.4
    {"image_id": 1, "category_id": 1, "bbox": [32, 32, 32, 32]},
    # "b": 64 x 4, y 100..104: the best anchors are the 14 size-16 squares centred at x = 40..88, y = 96 or
    # 104, each overlapping 16 x 4: IoU 64 / (256 + 256 - 64) = 1/7; none of them touches box "a"
    {"image_id": 1, "category_id": 2, "bbox": [32, 100, 64, 4]},
]


def _dataset(root, boxes, size=(128, 128), images=1):
    data = coco_json([(i, f"{i}.jpg", *size) for i in range(1, images + 1)], boxes, [(1, "a"), (2, "b")])
    ann, image_root = write_coco(root, data)
    return ann, image_root


def test_hand_built_coverage(tmp_path):
    ann, images = _dataset(tmp_path, HAND_BOXES)
    dataset = COCODetection(ann, images, transforms=build_transforms(False, 128, 128))
    config = RetinaNetConfig(**ONE_ANCHOR)
    records = box_records(dataset, config, progress=False)
    assert records.best_iou.tolist() == pytest.approx([1.0, 1 / 7], abs=1e-6)
    assert records.positives.tolist() == [1, 14]  # "b": every tied best anchor, by the low-quality match
    report = summary(records, ["a", "b"], config)
    assert report["coverage"] == 0.5 and report["rescued_by_low_quality_only"] == 1
    assert report["without_positive_anchor"] == 0
    assert report["per_class"]["b"]["below_fg_share"] == 1.0 and report["per_class"]["a"]["below_fg_share"] == 0.0
    assert report["per_size"]["32-64"]["boxes"] == 1 and report["per_size"]["16-32"]["below_fg_share"] == 1.0
    assert report["negatives_per_positive"] == pytest.approx((341 - 15) / 15)

    strict = RetinaNetConfig(**ONE_ANCHOR, allow_low_quality_matches=False)
    report = summary(box_records(dataset, strict, progress=False), ["a", "b"], strict)
    assert report["without_positive_anchor"] == 1 and report["rescued_by_low_quality_only"] == 0
    assert report["negatives_per_positive"] == pytest.approx(340 / 1)


# Wide boxes (h / w = 1/6): the default ratios (0.5, 1, 2) leave them under IoU 0.5
ELONGATED = [{"image_id": i, "category_id": 1 + i % 2, "bbox": [8 + 4 * (i % 5), 10 + 12 * k, 72, 12]}
             for i in range(1, 9) for k in range(4)]
DEFAULT_ANCHORS = dict(num_classes=2, backbone="resnet18", fpn_channels=16, anchor_sizes=(16, 32, 64, 128, 256),
                       min_size=128, max_size=128)


def test_the_suggestion_raises_coverage_on_elongated_boxes(tmp_path):
    ann, images = _dataset(tmp_path, ELONGATED, images=8)
    dataset = COCODetection(ann, images, transforms=build_transforms(False, 128, 128))
    config = RetinaNetConfig(**DEFAULT_ANCHORS)
    records = box_records(dataset, config, progress=False)
    suggestion = suggest_anchors(records, config, progress=False)
    assert suggestion["before"] < 0.5 and suggestion["after"] >= 0.9
    assert min(suggestion["ratios"]) <= 0.25  # a ratio near the boxes' 1/6
    again = RetinaNetConfig(**{**DEFAULT_ANCHORS, "anchor_sizes": tuple(suggestion["sizes"]),
                               "anchor_scales": tuple(suggestion["scales"]),
                               "anchor_ratios": tuple(suggestion["ratios"])})
    assert summary(box_records(dataset, again, progress=False), ["a", "b"], again)["coverage"] == suggestion["after"]
    assert f"anchor_ratios: [{', '.join(f'{r:g}' for r in suggestion['ratios'])}]" in suggestion["yaml"]


def _args(tmp_path, ann, images):
    return ["--config", "configs/synthetic.yaml", "--data.dataset", "coco", "--data.root", str(tmp_path),
            "--data.train_ann", str(ann), "--data.val_ann", str(ann), "--data.train_images", str(images),
            "--data.val_images", str(images), "--data.min_size", "128", "--data.max_size", "128",
            "--data.num_workers", "0", "--data.batch_size", "4"]


def test_check_data_command_writes_its_files(tmp_path, capsys):
    ann, images = _dataset(tmp_path / "d", ELONGATED, images=8)
    out = tmp_path / "check"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["check-data", *_args(tmp_path / "d", ann, images), "--out", str(out), "--browse", "2"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "check.json").read_text())
    assert report["boxes"] == 32 and report["images"] == 8 and report["boxes_per_class"] == {"a": 16, "b": 16}
    assert report["suggestion"]["after"] > report["coverage"]
    assert "anchor_ratios:" in printed and "anchor suggestion: coverage" in printed
    for name in ("label_stats.png", "worst_boxes.png", "browse/batch_000.png", "browse/batch_001.png"):
        assert (out / name).stat().st_size > 0, name


def test_a_bad_override_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["check-data", "--config", "configs/synthetic.yaml", "--data.no_such_key", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: configs/synthetic.yaml: bad config or override")


def test_fit_warns_once_when_coverage_is_low(tmp_path, capsys):
    ann, images = _dataset(tmp_path / "d", ELONGATED, images=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert run_cli(["fit", *_args(tmp_path / "d", ann, images), "--trainer.max_steps", "1",
                        "--trainer.default_root_dir", str(tmp_path / "run"),
                        "--trainer.logger.init_args.save_dir", str(tmp_path / "run"),
                        "--checkpoint.dirpath", str(tmp_path / "run/ckpt"), "--trainer.limit_val_batches", "0",
                        "--model.detector.fpn_channels", "16", "--model.detector.head_convs", "1",
                        "--trainer.precision", "32-true", "--trainer.enable_progress_bar", "false"]) == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if "have an anchor at IoU" in x]
    assert len(lines) == 1 and "detector check-data --config" in lines[0]
