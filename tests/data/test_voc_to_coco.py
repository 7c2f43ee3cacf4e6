"""scripts/voc_to_coco.py: its JSON read back by pycocotools, and one-line errors."""

from __future__ import annotations

import json

import pytest
from pycocotools.coco import COCO

from detector.data import VOC_CLASSES
from tests.data.fixtures import load_script, make_voc

IMAGES = {
    "000001": {"size": (50, 60), "objects": [("dog", (1, 1, 10, 20)), ("person", (5, 6, 30, 40), 1)]},
    "000002": {"size": (40, 45), "objects": [("cat", (2, 3, 12, 13)), ("dog", (20, 20, 40, 40))]},
    "000003": {"size": (40, 40), "objects": [("car", (2, 3, 12, 13))]},
}


@pytest.fixture(scope="module")
def script():
    return load_script("voc_to_coco")


def test_full_class_list(tmp_path, script, capsys):
    devkit = make_voc(tmp_path, IMAGES, {"test": list(IMAGES)})
    out = tmp_path / "out" / "voc07_test.json"
    assert script.main(["--root", str(devkit), "--year", "2007", "--split", "test", "--out", str(out)]) == 0
    assert "3 images, 5 boxes (1 difficult -> iscrowd=1)" in capsys.readouterr().out

    gt = COCO(str(out))
    assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == list(VOC_CLASSES)
    assert gt.getCatIds() == list(range(1, 21))
    assert gt.imgs[1] == {"id": 1, "file_name": "000001.jpg", "height": 50, "width": 60}
    dog = gt.loadAnns(gt.getAnnIds(imgIds=[1], catIds=[VOC_CLASSES.index("dog") + 1]))[0]
    assert dog["bbox"] == [0, 0, 10, 20] and dog["area"] == 200 and dog["iscrowd"] == 0
    person = gt.loadAnns(gt.getAnnIds(imgIds=[1], catIds=[VOC_CLASSES.index("person") + 1]))[0]
    assert person["bbox"] == [4, 5, 26, 35] and person["iscrowd"] == 1
    cat = gt.loadAnns(gt.getAnnIds(imgIds=[2], catIds=[VOC_CLASSES.index("cat") + 1]))[0]
    assert cat["bbox"] == [1, 2, 11, 11] and cat["area"] == 121
    assert len({a["id"] for a in gt.dataset["annotations"]}) == 5


def test_subset_classes_get_ids_in_given_order(tmp_path, script):
    devkit = make_voc(tmp_path, IMAGES, {"test": list(IMAGES)})
    out = tmp_path / "subset.json"
    args = ["--root", str(devkit), "--split", "test", "--classes", "dog", "cat", "--out", str(out)]
    assert script.main(args) == 0
    data = json.loads(out.read_text())
    assert data["categories"] == [
        {"id": 1, "name": "dog", "supercategory": "none"},
        {"id": 2, "name": "cat", "supercategory": "none"},
    ]
    assert sorted(im["id"] for im in data["images"]) == [1, 2]  # 000003 has neither class
    assert sorted((a["image_id"], a["category_id"]) for a in data["annotations"]) == [(1, 1), (2, 1), (2, 2)]

    small = tmp_path / "small.json"
    args = ["--root", str(devkit), "--split", "test", "--max-images", "2", "--seed", "5", "--out", str(small)]
    assert script.main(args) == 0 and len(json.loads(small.read_text())["images"]) == 2


def test_input_errors_are_one_line(tmp_path, script, capsys):
    rc = script.main(["--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "VOC2007" in err

    devkit = make_voc(tmp_path, IMAGES, {"test": list(IMAGES)})
    (devkit / "VOC2007" / "Annotations" / "000002.xml").write_text("<annotation>")
    rc = script.main(["--root", str(devkit), "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "000002.xml: malformed XML" in err


CUSTOM = {
    "blood_1": {"size": (48, 64), "objects": [("RBC", (1, 1, 10, 20)), ("WBC", (5, 6, 30, 40))]},
    "blood_2": {"size": (48, 64), "objects": [("Platelets", (2, 3, 12, 13)), ("RBC", (20, 20, 40, 40))]},
}


def test_custom_classes_with_one_flag(tmp_path, script):
    devkit = make_voc(tmp_path, CUSTOM, {"test": list(CUSTOM)})
    out = tmp_path / "bccd.json"
    args = ["--root", str(devkit), "--split", "test", "--classes", "RBC", "WBC", "Platelets", "--out", str(out)]
    assert script.main(args) == 0
    gt = COCO(str(out))
    assert [(c["id"], c["name"]) for c in gt.loadCats(gt.getCatIds())] == [(1, "RBC"), (2, "WBC"), (3, "Platelets")]
    pairs = sorted((gt.imgs[a["image_id"]]["file_name"], a["category_id"]) for a in gt.dataset["annotations"])
    assert pairs == [("blood_1.jpg", 1), ("blood_1.jpg", 2), ("blood_2.jpg", 1), ("blood_2.jpg", 3)]


def test_custom_class_missing_from_the_list_names_the_flags(tmp_path, script, capsys):
    devkit = make_voc(tmp_path, CUSTOM, {"test": list(CUSTOM)})
    args = ["--root", str(devkit), "--split", "test", "--classes", "RBC", "WBC", "--out", str(tmp_path / "x.json")]
    assert script.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown class 'Platelets'" in err and "--classes A B C" in err
    assert "--class-list" in err

    # without any flag, VOC's 20 classes are assumed: the message says how to name custom ones
    assert script.main(["--root", str(devkit), "--split", "test", "--out", str(tmp_path / "y.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown class 'RBC'" in err and "--classes A B C" in err
