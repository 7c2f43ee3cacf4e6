"""Fuzzing of the YOLO and CSV readers, as tests/reliability/test_fuzz.py fuzzes the COCO and VOC ones.

The property: the reader returns (counted DatasetWarnings allowed) a dataset whose items hold
finite boxes and labels in 0..K-1 and whose COCO ground truth builds, or raises one DatasetError line.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from detector.data import DatasetError
from detector.data.csv_dataset import CSVDetection
from detector.data.yolo import YOLODetection
from tests.data.fixtures import write_image
from tests.reliability.test_fuzz import EDGE_NUMBERS, EDGE_STRINGS, _one_line, mutate_bytes, mutate_document

FIELDS = st.one_of(st.sampled_from([str(v) for v in EDGE_NUMBERS] + EDGE_STRINGS), st.text(max_size=8),
                   st.floats(allow_nan=True, allow_infinity=True).map(str), st.integers(-5, 5).map(str))


def _mutate_rows(data, rows: list[list[str]], separator: str) -> bytes:
    """Rows with fields replaced, removed or added, rows duplicated or dropped, then byte mutations."""
    rows = [list(r) for r in rows]
    for _ in range(data.draw(st.integers(0, 5), label="row operations")):
        r = data.draw(st.integers(0, len(rows) - 1), label="row") if rows else 0
        op = data.draw(st.sampled_from(["replace", "drop field", "add field", "duplicate", "drop row"]), label="op")
        if not rows:
            break
        if op == "replace" and rows[r]:
            rows[r][data.draw(st.integers(0, len(rows[r]) - 1))] = data.draw(FIELDS, label="field")
        elif op == "drop field" and rows[r]:
            rows[r].pop()
        elif op == "add field":
            rows[r].append(data.draw(FIELDS, label="field"))
        elif op == "duplicate":
            rows.append(list(rows[r]))
        elif op == "drop row":
            rows.pop(r)
    text = "\n".join(separator.join(r) for r in rows)
    return mutate_bytes(data, text.encode("utf-8", "surrogatepass"))


def _check(dataset) -> None:
    for i in range(len(dataset)):
        item = dataset[i]
        assert item["boxes"].shape == (len(item["labels"]), 4) and np.isfinite(item["boxes"]).all()
        assert ((item["labels"] >= 0) & (item["labels"] < dataset.num_classes)).all()
    dataset.coco_gt()


@pytest.fixture(scope="module")
def yolo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_yolo")
    write_image(root / "images/train/a.jpg", 30, 40)
    write_image(root / "images/train/b.png", 24, 24)
    (root / "labels/train").mkdir(parents=True)
    return root


YOLO_YAML = {"path": ".", "train": "images/train", "val": "images/train", "nc": 2, "names": {0: "cat", 1: "dog"}}
YOLO_LINES = [["0", "0.5", "0.5", "0.2", "0.3"], ["1", "0.1", "0.1", "0.3", "0.2", "0.2", "0.4"]]


@given(data=st.data())
def test_fuzz_yolo_reader(yolo_dir, data):
    doc = mutate_document(data, json.loads(json.dumps({**YOLO_YAML, "names": ["cat", "dog"]})), max_ops=2)
    if data.draw(st.booleans(), label="names as dict"):
        doc = YOLO_YAML if data.draw(st.booleans(), label="unchanged dict") else doc
    (yolo_dir / "data.yaml").write_bytes(mutate_bytes(data, yaml.safe_dump(doc, allow_unicode=True).encode()))
    (yolo_dir / "labels/train/a.txt").write_bytes(_mutate_rows(data, YOLO_LINES, " "))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _check(YOLODetection(yolo_dir, "train"))
        except DatasetError as err:
            _one_line(err)


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_csv")
    write_image(root / "a.jpg", 30, 40)
    write_image(root / "b.png", 24, 24)
    return root


CSV_ROWS = [["a.jpg", "2", "3", "20", "25", "cat"], ["b.png", "", "", "", "", ""], ["a.jpg", "1", "1", "40", "30", "dog"]]
CLASS_ROWS = [["cat", "0"], ["dog", "1"]]


@given(data=st.data())
def test_fuzz_csv_reader(csv_dir, data):
    (csv_dir / "train.csv").write_bytes(_mutate_rows(data, CSV_ROWS, ","))
    (csv_dir / "classes.csv").write_bytes(_mutate_rows(data, CLASS_ROWS, ",") if data.draw(st.booleans())
                                          else b"cat,0\ndog,1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _check(CSVDetection(csv_dir / "train.csv", csv_dir / "classes.csv"))
        except DatasetError as err:
            _one_line(err)
