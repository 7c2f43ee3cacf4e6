"""The dataset scan (detector/data/scan.py): what it finds, its cache, and the skip / error policy."""

from __future__ import annotations

import io
import json
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from detector.data import COCODetection, DatasetError, DatasetWarning
from detector.data import scan as scan_module
from detector.data.collate import collate_detection
from detector.data.scan import CACHE_NAME, apply_scan, check_image, scan_dataset, scan_images
from detector.training.datamodule import DetectionDataModule
from tests.conftest import write_tiny_synthetic
from tests.data.fixtures import rgb_jpeg_bytes


def _png_bytes(height: int, width: int) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _pillow_verdict(path, declared) -> bool:
    """The reference: Pillow decodes the whole file (truncation is an error) at the declared size."""
    try:
        with Image.open(path) as image:
            image.load()
            return (image.height, image.width) == tuple(declared)
    except Exception:  # noqa: BLE001 - any failure of the reference decode means "unusable"
        return False


JPEG = rgb_jpeg_bytes(48, 64)
PNG = _png_bytes(48, 64)
FILES = {
    "good.jpg": JPEG,
    "good.png": PNG,
    "empty.jpg": b"",
    "text.jpg": b"<html>not found</html>",
    "truncated.jpg": JPEG[: len(JPEG) // 2],
    "truncated_tail.jpg": JPEG[:-2],  # only the end marker lost: Pillow decodes it whole, so may we
    "truncated.png": PNG[: len(PNG) - 40],
    "trailing.jpg": JPEG + b"\0" * 100,  # bytes after the end marker: legal
    "long_trailing.jpg": JPEG + b"\0" * 10_000,  # end marker beyond the tail read: decoded in full
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_check_image_agrees_with_a_full_pillow_decode(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(FILES[name])
    expected_ok = _pillow_verdict(path, (48, 64))
    reason = check_image(path, (48, 64))
    assert (reason is None) == expected_ok, reason
    if name.startswith(("good", "trailing", "long", "truncated_tail")):
        assert reason is None  # the reference itself must say these are fine
    else:
        assert isinstance(reason, str) and reason


def test_check_image_compares_the_declared_size(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(JPEG)
    assert check_image(path, (48, 64)) is None
    assert "decoded image is 48x64 (h x w, EXIF orientation applied) but the annotation declares 64x48" == check_image(path, (64, 48))
    assert "not found" in check_image(tmp_path / "missing.jpg", (48, 64))


def test_scan_caches_results_and_rechecks_a_changed_file(tmp_path, monkeypatch):
    names = sorted(FILES)
    for name in names:
        (tmp_path / name).write_bytes(FILES[name])
    sizes = np.tile([48, 64], (len(names), 1))
    first = scan_images(tmp_path, names, sizes, progress=False)
    bad = {os.path.basename(b["file"]) for b in first.bad}
    assert bad == {n for n in names if not _pillow_verdict(tmp_path / n, (48, 64))}
    assert first.cached == 0 and (tmp_path / CACHE_NAME).is_file()

    calls = []
    real_check = scan_module.check_image
    monkeypatch.setattr(scan_module, "check_image", lambda *a: calls.append(a[0]) or real_check(*a))
    second = scan_images(tmp_path, names, sizes, progress=False)
    assert calls == [] and second.cached == len(names)  # nothing opened the second time
    assert second.bad == first.bad and second.bad_indices.tolist() == first.bad_indices.tolist()

    (tmp_path / "good.jpg").write_bytes(JPEG[:100])  # a file that went bad: new size and mtime
    os.utime(tmp_path / "good.png", ns=(0, 10**9))  # touched only: the mtime changes
    sizes[names.index("trailing.jpg")] = (64, 48)  # the annotation changed its declared size
    third = scan_images(tmp_path, names, sizes, progress=False)
    assert sorted(os.path.basename(str(p)) for p in calls) == ["good.jpg", "good.png", "trailing.jpg"]
    assert {os.path.basename(b["file"]) for b in third.bad} == bad | {"good.jpg", "trailing.jpg"}


def test_scan_of_a_read_only_folder_still_works(tmp_path, monkeypatch):
    (tmp_path / "a.jpg").write_bytes(JPEG)
    monkeypatch.setattr(scan_module, "_write_cache", lambda *a: False)
    report = scan_images(tmp_path, ["a.jpg"], np.array([[48, 64]]), progress=False)
    assert report.bad == [] and report.cache_file is None


@pytest.fixture
def damaged(tmp_path):
    """The tiny synthetic set with 2 of its 8 training images broken (0 bytes, truncated)."""
    root = write_tiny_synthetic(tmp_path / "syn", num_train=8, num_val=4)
    (root / "images/train/000002.jpg").write_bytes(b"")
    data = (root / "images/train/000005.jpg").read_bytes()
    (root / "images/train/000005.jpg").write_bytes(data[: len(data) // 2])
    return root


def _dm(root, **kwargs):
    return DetectionDataModule(dataset="synthetic", root=str(root), min_size=128, max_size=128, batch_size=2,
                               num_workers=0, pin_memory=False, **kwargs)


def test_setup_skips_unreadable_training_images_with_one_summary_line(damaged, capsys):
    dm = _dm(damaged)
    dm.setup("fit")
    names = list(dm.train_dataset.table.file_names)
    assert len(names) == 6 and "train/000002.jpg" not in names and "train/000005.jpg" not in names
    assert capsys.readouterr().err.splitlines()[0] == "2 of 8 training images unreadable, skipped: see the list below"
    assert len(dm.val_dataset) == 4
    items = [dm.train_dataset[i] for i in range(len(dm.train_dataset))]  # every kept image reads
    assert all("skipped" not in item for item in items)


def test_on_bad_image_error_stops_at_the_first_unreadable_image(damaged):
    with pytest.raises(DatasetError, match=r"000002\.jpg: cannot read image .*\(1 more unreadable train images\)"):
        _dm(damaged, on_bad_image="error").setup("fit")
    with pytest.raises(ValueError, match="on_bad_image"):
        _dm(damaged, on_bad_image="ignore")


def test_an_image_that_goes_bad_after_the_scan_is_replaced_and_counted(damaged):
    dm = _dm(damaged)
    dm.setup("fit")
    dataset = dm.train_dataset
    victim = dataset.image_path(1)
    victim.write_bytes(b"")  # unreadable now, after the scan passed it
    with pytest.warns(DatasetWarning, match=r"000001\.jpg: cannot read image.*skipped"):
        item = dataset[1]
    assert item["skipped"] == [str(victim)]
    assert item["image_id"] == int(dataset.table.image_ids[2])  # the next image stands in
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per file, not at every read
        dataset[1]

    loader = dm.train_dataloader()
    sizes, seen = [], []
    for batch in loader:
        sizes.append(len(batch["images"]))
        batch = dm.on_before_batch_transfer(batch, 0)
        assert "skipped_images" not in batch  # counted, then out of the batch
        seen.extend(batch["image_ids"].tolist())
    assert sizes == [2, 2, 2]  # batches keep their size
    assert dm.skipped_during_run == {str(victim): 1}
    assert int(dataset.table.image_ids[1]) not in seen

    dataset.on_bad_image = "error"
    with pytest.raises(DatasetError, match="cannot read image"):
        dataset[1]


def test_collate_lists_skipped_images_only_when_there_are_some():
    item = {"image": np.zeros((4, 4, 3), np.uint8), "boxes": np.zeros((0, 4), np.float32),
            "labels": np.zeros(0, np.int64), "image_id": 1, "orig_size": (4, 4)}
    assert "skipped_images" not in collate_detection([item, item])
    batch = collate_detection([item, {**item, "skipped": ["a.jpg", "b.jpg"]}])
    assert batch["skipped_images"] == ["a.jpg", "b.jpg"] and batch["images"].shape[0] == 2


def test_apply_scan_on_a_coco_dataset_drops_the_images_from_the_ground_truth(damaged):
    dataset = COCODetection(damaged / "train.json", damaged / "images")
    report = scan_dataset(dataset, progress=False)
    apply_scan(dataset, report, "skip")
    gt = dataset.coco_gt()
    with open(damaged / "train.json") as f:
        names = {im["id"]: im["file_name"] for im in json.load(f)["images"]}
    assert sorted(names[i] for i in gt.getImgIds()) == sorted(set(names.values()) - {"train/000002.jpg",
                                                                                       "train/000005.jpg"})
    assert torch.is_tensor(torch.as_tensor(dataset[0]["boxes"]))
