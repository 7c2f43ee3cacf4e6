"""YOLO (Ultralytics data YAML + labels/*.txt) and keras-retinanet CSV datasets, each quirk by hand."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from detector.data import DatasetError
from detector.data.csv_dataset import CSVDetection, read_csv_classes
from detector.data.yolo import YOLODetection, label_path
from detector.training.datamodule import DetectionDataModule
from tests.data.fixtures import write_image


def make_yolo(root, names="{0: cat, 1: dog}", nc="2", extra_lines=()):
    """A.jpg (40 x 60, h x w) with four label lines, b.png without a label file, an orphan label."""
    write_image(root / "images/train/a.jpg", 40, 60)
    write_image(root / "images/train/b.png", 20, 20)
    (root / "labels/train").mkdir(parents=True)
    (root / "labels/train/a.txt").write_text("\n".join([
        "0 0.5 0.5 0.5 0.25",          # (15, 15, 45, 25)
        "1 0.1 0.1 0.4 0.4",           # corners -0.1..0.3: outside [0, 1], clipped to (0, 0, 18, 12)
        "5 0.5 0.5 0.1 0.1",           # class 5: outside names
        "1 0.1 0.2 0.3 0.2 0.2 0.5",   # a polygon: its bounding box (6, 8, 18, 20)
        "", *extra_lines]))
    (root / "labels/train/orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (root / "labels/train/classes.txt").write_text("cat\ndog\n")  # labelImg's class list: not an orphan
    (root / "val.txt").write_text("./images/train/a.jpg\n")
    yaml_text = f"path: .\ntrain: images/train\nval: val.txt\nnames: {names}\n" + (f"nc: {nc}\n" if nc else "")
    (root / "data.yaml").write_text(yaml_text)
    return root / "data.yaml"


def test_label_path_follows_ultralytics():
    from pathlib import Path
    assert label_path(Path("/d/images/train/images/x.jpg")) == Path("/d/images/train/labels/x.txt")
    assert label_path(Path("/d/pics/x.png")) == Path("/d/pics/x.txt")


def test_yolo_boxes_quirks_and_counts(tmp_path):
    data_yaml = make_yolo(tmp_path)
    with pytest.warns(UserWarning) as record:
        dataset = YOLODetection(data_yaml, "train")
    summary = str(record[-1].message)
    assert "1 x box with a class id outside names (dropped)" in summary
    assert "1 x box with coordinates outside [0, 1]" in summary
    assert "1 x label file without an image (ignored)" in summary
    assert "1 x image without labels" in summary
    assert dataset.class_names == ["cat", "dog"] and len(dataset) == 2
    boxes, labels, _ = dataset.table.boxes_of(0)
    np.testing.assert_allclose(boxes, [[15, 15, 45, 25], [0, 0, 18, 12], [6, 8, 18, 20]], atol=1e-4)
    assert labels.tolist() == [0, 1, 1]
    assert len(dataset.table.boxes_of(1)[0]) == 0  # b.png: background, kept
    item = dataset[0]
    assert item["image"].shape == (40, 60, 3)


def test_yolo_list_file_and_names_list(tmp_path):
    data_yaml = make_yolo(tmp_path, names="[cat, dog]", nc=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        val = YOLODetection(tmp_path, "val")  # the folder holding data.yaml
    assert list(val.table.file_names) == ["images/train/a.jpg"] and val.class_names == ["cat", "dog"]
    assert data_yaml.is_file()


@pytest.mark.parametrize("names, nc, line, message", [
    ("[cat, dog]", "3", None, "nc is 3 but names lists 2"),
    ("{0: cat, 2: dog}", None, None, "keys must be the class ids"),
    ("[cat, cat]", None, None, "repeated class names"),
    ("[cat, dog]", None, "0 a b c d", "line 6: expected numbers"),
    ("[cat, dog]", None, "1.5 0.5 0.5 0.1 0.1", "line 6: class id '1.5' is not an integer"),
    ("[cat, dog]", None, "0 0.5 0.5", "line 6: expected 'class cx cy w h'"),
])
def test_yolo_refusals_are_one_line(tmp_path, names, nc, line, message):
    data_yaml = make_yolo(tmp_path, names=names, nc=nc, extra_lines=[line] if line else [])
    with warnings.catch_warnings(), pytest.raises(DatasetError) as err:
        warnings.simplefilter("ignore")
        YOLODetection(data_yaml, "train")
    assert message in str(err.value) and "\n" not in str(err.value)


def _perfect_ap(dataset) -> float:
    """COCO AP of detections equal to the ground truth (1.0 when the ground truth is well formed)."""
    gt = dataset.coco_gt()
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt.dataset["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    return evaluator.stats[0]


def test_yolo_and_csv_evaluate_with_coco_map(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yolo = YOLODetection(make_yolo(tmp_path / "y"), "train")
    assert _perfect_ap(yolo) == pytest.approx(1.0)
    assert _perfect_ap(CSVDetection(*make_csv(tmp_path / "c"))) == pytest.approx(1.0)


def make_csv(root, extra_rows=()):
    write_image(root / "images/a.jpg", 40, 60)
    write_image(root / "images/b.jpg", 30, 30)
    rows = ["images/a.jpg,10,12,30,35,dog", "images/b.jpg,,,,,", "images/a.jpg,0.5,1.5,20,20,cat", *extra_rows]
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    (root / "classes.csv").write_text("dog,1\ncat,0\n")
    return root / "train.csv", root / "classes.csv"


def test_csv_boxes_empty_images_and_classes(tmp_path):
    dataset = CSVDetection(*make_csv(tmp_path))
    assert dataset.class_names == ["cat", "dog"]  # id order
    assert list(dataset.table.file_names) == ["images/a.jpg", "images/b.jpg"]
    boxes, labels, _ = dataset.table.boxes_of(0)
    np.testing.assert_allclose(boxes, [[10, 12, 30, 35], [0.5, 1.5, 20, 20]])
    assert labels.tolist() == [1, 0]
    assert len(dataset.table.boxes_of(1)[0]) == 0


@pytest.mark.parametrize("row, message", [
    ("images/a.jpg,1,2,3,4,bird", "row 4: unknown class 'bird'"),
    ("images/a.jpg,1,2,3,4", "row 4: expected 'path,x1,y1,x2,y2,class', got 5 fields"),
    ("images/a.jpg,1,x,3,4,cat", "row 4: coordinates must be numbers"),
    ("images/a.jpg,1,,3,4,cat", "row 4: a box row needs"),
    ("../a.jpg,1,2,3,4,cat", "escapes the image root"),
])
def test_csv_refusals_are_one_line(tmp_path, row, message):
    with pytest.raises(DatasetError) as err:
        CSVDetection(*make_csv(tmp_path, [row]))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_csv_class_file_refusals(tmp_path):
    (tmp_path / "c.csv").write_text("cat,0\ndog,0\n")
    with pytest.raises(DatasetError, match="row 2: repeated class name or id"):
        read_csv_classes(tmp_path / "c.csv")
    (tmp_path / "c.csv").write_text("cat,zero\n")
    with pytest.raises(DatasetError, match="row 1: class id 'zero' is not an integer"):
        read_csv_classes(tmp_path / "c.csv")


def test_csv_box_rule_counts(tmp_path):
    with pytest.warns(UserWarning, match="1 x box of zero or negative size"):
        dataset = CSVDetection(*make_csv(tmp_path, ["images/a.jpg,20,5,10,15,cat"]))
    assert len(dataset.table.boxes_of(0)[0]) == 2


@pytest.mark.parametrize("kind", ["yolo", "csv"])
def test_datamodule_reads_both(tmp_path, kind):
    if kind == "yolo":
        root = make_yolo(tmp_path)
    else:
        make_csv(tmp_path)
        (tmp_path / "val.csv").write_text((tmp_path / "train.csv").read_text())
        root = tmp_path
    dm = DetectionDataModule(dataset=kind, root=str(root), min_size=64, max_size=64, batch_size=2, num_workers=0,
                             pin_memory=False)
    assert dm.num_classes == 2  # before any dataset is built
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape[0] == 2 and dm.val_coco_gt().getImgIds()


def test_drop_empty_and_max_images(tmp_path):
    data_yaml = make_yolo(tmp_path / "y")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert list(YOLODetection(data_yaml, "train", drop_empty=True).table.file_names) == ["images/train/a.jpg"]
        assert len(YOLODetection(data_yaml, "train", max_images=1)) == 1
    assert len(CSVDetection(*make_csv(tmp_path / "c"), drop_empty=True)) == 1
