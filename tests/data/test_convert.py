"""`detector convert`: round trips COCO -> YOLO -> COCO and CSV -> COCO, and Ultralytics' layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from detector.commands import main
from tests.data.fixtures import coco_json, make_voc, write_coco
from tests.data.test_yolo_csv import make_csv

COCO_BOXES = [  # image 1 is 50 x 80 (h x w), image 2 is 64 x 64
    {"image_id": 1, "category_id": 3, "bbox": [10.25, 5.5, 30.0, 20.75]},
    {"image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 79.5, 49.0]},
    {"image_id": 2, "category_id": 1, "bbox": [33.3, 12.7, 8.1, 40.2]},
    {"image_id": 2, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 1},
]


def _by_name(data: dict) -> list[tuple]:
    """(file_name, category name, iscrowd, bbox) of every annotation, sorted."""
    names = {c["id"]: c["name"] for c in data["categories"]}
    files = {im["id"]: im["file_name"] for im in data["images"]}
    return sorted((files[a["image_id"]], names[a["category_id"]], a.get("iscrowd", 0), *a["bbox"])
                  for a in data["annotations"])


def test_coco_to_yolo_to_coco_round_trip(tmp_path, capsys):
    data = coco_json([(1, "a.jpg", 50, 80), (2, "sub/b.png", 64, 64)], COCO_BOXES, [(1, "cat"), (3, "dog")])
    ann, images = write_coco(tmp_path / "coco", data)
    out = tmp_path / "yolo"
    assert main(["convert", "--from", "coco", "--to", "yolo", "--root", str(tmp_path / "coco"), "--ann", ann.name,
                 "--images", "images", "--split", "val", "--out", str(out)]) == 0
    assert "1 crowd/difficult boxes left out" in capsys.readouterr().out
    # Ultralytics' layout: images/<split>/..., labels/<split>/... .txt, data.yaml with names as a dict
    assert (out / "images/val/a.jpg").is_file() and (out / "images/val/sub/b.png").is_file()
    assert (out / "labels/val/a.txt").read_text().splitlines()[0].split()[0] == "1"  # dog is label 1
    spec = yaml.safe_load((out / "data.yaml").read_text())
    assert spec == {"path": str(out.resolve()), "val": "images/val", "nc": 2, "names": {0: "cat", 1: "dog"}}

    back = tmp_path / "back.json"
    assert main(["convert", "--from", "yolo", "--to", "coco", "--root", str(out), "--split", "val",
                 "--out", str(back)]) == 0
    expected = [row for row in _by_name(data) if row[2] == 0]
    got = [(f.replace("images/val/", ""), *rest) for f, *rest in _by_name(json.loads(back.read_text()))]
    assert [r[:3] for r in got] == [r[:3] for r in expected]
    np.testing.assert_allclose([r[3:] for r in got], [r[3:] for r in expected], atol=0.5)
    np.testing.assert_allclose([r[3:] for r in got], [r[3:] for r in expected], atol=1e-3)  # 6 decimals


def test_a_second_split_is_added_and_other_classes_refused(tmp_path, capsys):
    data = coco_json([(1, "a.jpg", 50, 80)], COCO_BOXES[:2], [(1, "cat"), (3, "dog")])
    ann, _ = write_coco(tmp_path / "coco", data)
    common = ["convert", "--from", "coco", "--to", "yolo", "--root", str(tmp_path / "coco"), "--ann", ann.name,
              "--images", "images", "--out", str(tmp_path / "yolo")]
    assert main([*common, "--split", "train"]) == 0 and main([*common, "--split", "val"]) == 0
    spec = yaml.safe_load((tmp_path / "yolo/data.yaml").read_text())
    assert list(spec) == ["path", "train", "val", "nc", "names"]
    other = coco_json([(1, "a.jpg", 50, 80)], COCO_BOXES[:1], [(3, "bird")])
    ann2, _ = write_coco(tmp_path / "coco", other, name="other.json")
    with pytest.raises(SystemExit):
        main([*common[:8], ann2.name, *common[9:], "--split", "test"])
    assert "holds other classes" in capsys.readouterr().err


def test_csv_to_coco_is_exact(tmp_path):
    ann, _ = make_csv(tmp_path / "csv")
    out = tmp_path / "c.json"
    assert main(["convert", "--from", "csv", "--to", "coco", "--root", str(tmp_path / "csv"), "--out", str(out)]) == 0
    got = _by_name(json.loads(out.read_text()))
    rows = [r.split(",") for r in ann.read_text().splitlines() if r.split(",")[1]]
    expected = sorted((p, c, 0, float(x1), float(y1), float(x2) - float(x1), float(y2) - float(y1))
                      for p, x1, y1, x2, y2, c in rows)
    assert [r[:3] for r in got] == [r[:3] for r in expected]
    np.testing.assert_allclose([r[3:] for r in got], [r[3:] for r in expected], atol=1e-3)
    assert {im["file_name"] for im in json.loads(out.read_text())["images"]} == {"images/a.jpg", "images/b.jpg"}


def test_voc_to_yolo(tmp_path, capsys):
    devkit = make_voc(tmp_path, {"000001": {"size": (30, 40), "objects": [("dog", (3, 4, 20, 25)),
                                                                          ("cat", (1, 1, 10, 10), 1)]}},
                      {"train": ["000001"]})
    out = tmp_path / "yolo"
    assert main(["convert", "--from", "voc", "--to", "yolo", "--root", str(devkit / "VOC2007"), "--split", "train",
                 "--out", str(out)]) == 0
    assert "1 crowd/difficult boxes left out" in capsys.readouterr().out
    assert yaml.safe_load((out / "data.yaml").read_text())["nc"] == 20
    # VOC (3, 4, 20, 25) 1-based -> (2, 3, 20, 25) pixels -> centre (11, 14), size (18, 22) of 40 x 30
    assert (out / "labels/train/000001.txt").read_text() == "11 0.275000 0.466667 0.450000 0.733333\n"
