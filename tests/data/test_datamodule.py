"""DetectionDataModule (the only Lightning-dependent part of the data code)."""

from __future__ import annotations


import torch

from detector.data import SYNTHETIC_CLASSES
from detector.training.datamodule import DetectionDataModule
from tests.data.fixtures import make_voc


def _synthetic(tmp_path, **kwargs):
    args = dict(
        dataset="synthetic", root=str(tmp_path / "syn"), min_size=128, max_size=128, batch_size=2,
        num_workers=0, pin_memory=False, synthetic_num_train=5, synthetic_num_val=3,
    )  # fmt: skip
    return DetectionDataModule(**{**args, **kwargs})


def test_synthetic_prepare_setup_and_batches(tmp_path):
    dm = _synthetic(tmp_path)
    assert dm.num_classes == 5 and dm.class_names == list(SYNTHETIC_CLASSES)  # known before any data exists
    dm.prepare_data()
    assert (tmp_path / "syn" / "train.json").is_file() and (tmp_path / "syn" / "val.json").is_file()
    dm.setup("fit")
    dm.setup("fit")  # idempotent
    assert len(dm.train_dataset) == 5 and len(dm.val_dataset) == 3
    assert dm.label_to_category_id == [1, 2, 3, 4, 5]

    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (2, 3, 128, 128) and batch["images"].dtype == torch.uint8
    assert batch["boxes"].shape[:2] == batch["labels"].shape == batch["valid"].shape
    assert set(batch) == {"images", "image_sizes", "orig_sizes", "boxes", "labels", "valid", "image_ids"}
    assert len(dm.train_dataloader()) == 2  # drop_last on a dataset larger than a batch

    val = [b["image_ids"].tolist() for b in dm.val_dataloader()]
    again = [b["image_ids"].tolist() for b in dm.val_dataloader()]
    assert val == again == [[1, 2], [3]]  # no shuffle
    gt = dm.val_coco_gt()
    assert sorted(gt.getImgIds()) == [1, 2, 3]


def test_hparams_are_plain_values(tmp_path):
    dm = _synthetic(tmp_path, train_min_sizes=[96, 128])
    assert dm.hparams.train_min_sizes == [96, 128] and dm.hparams.dataset == "synthetic"
    assert dm.batch_size == 2 and dm.val_batch_size == 2


def test_voc_subset_label_space_and_gt(tmp_path):
    images = {
        "000001": {"size": (40, 40), "objects": [("dog", (1, 1, 10, 10)), ("cat", (12, 12, 30, 30), 1)]},
        "000002": {"size": (40, 40), "objects": [("car", (1, 1, 10, 10))]},
        "000003": {"size": (40, 40), "objects": [("cat", (5, 5, 25, 25))]},
    }
    make_voc(tmp_path, images, {"trainval": list(images), "test": list(images)})
    dm = DetectionDataModule(
        dataset="voc", root=str(tmp_path), subset_classes=["cat", "dog"], min_size=64, max_size=64,
        batch_size=2, num_workers=0, pin_memory=False,
    )  # fmt: skip
    assert dm.class_names == ["cat", "dog"] and dm.label_to_category_id == [1, 2]
    dm.setup("validate")
    assert dm.train_dataset is None and dm.val_dataset.image_ids.tolist() == [1, 3]
    gt = dm.val_coco_gt()
    assert sorted((a["category_id"], a["iscrowd"]) for a in gt.dataset["annotations"]) == [(1, 0), (1, 1), (2, 0)]
    batch = next(iter(dm.val_dataloader()))
    assert batch["images"].shape == (2, 3, 128, 128)
    assert batch["labels"].tolist() == [[1], [0]]  # the difficult cat is not a target


def test_custom_voc_format_folder_without_year(tmp_path):
    images = {
        "a": {"size": (40, 40), "objects": [("widget", (1, 1, 10, 10))]},
        "b": {"size": (40, 40), "objects": [("gadget", (5, 5, 25, 25))]},
    }
    make_voc(tmp_path, images, {"train": ["a", "b"], "val": ["b"]})
    folder = tmp_path / "VOCdevkit" / "VOC2007"  # the user's folder: Annotations/, JPEGImages/, ImageSets/
    dm = DetectionDataModule(
        dataset="voc", root=str(folder), classes=["widget", "gadget"], voc_train_set="train", voc_val_set="val",
        min_size=64, max_size=64, batch_size=2, num_workers=0, pin_memory=False,
    )  # fmt: skip
    dm.setup("fit")
    assert dm.num_classes == 2 and len(dm.train_dataset) == 2 and len(dm.val_dataset) == 1
    assert next(iter(dm.train_dataloader()))["labels"].sort(dim=0).values.tolist() == [[0], [1]]
