"""Property-based fuzzing of the parsers: whatever the file holds, the documented handling or one line.

Each parser is fed valid documents mutated by hypothesis (values replaced by other types, huge,
negative, NaN or infinite numbers, strings; keys deleted; entries duplicated; deep nesting) and then
serialised and mutated as bytes (truncated, non-UTF-8 bytes inserted, nested thousands deep). The
property: the parser returns (with counted DatasetWarnings where the docs say so) or raises the
project's one-line error type (DatasetError, EvaluationError, CheckpointError); any other exception,
or an example slower than the profile's deadline (a hang), fails. Profiles are in tests/conftest.py:
"ci" by default, `--hypothesis-profile long` for the measured run (docs/reliability.md).
"""

from __future__ import annotations

import copy
import io
import json
import math
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from detector.checkpoint import CheckpointError, load_detector
from detector.data import COCODetection, DatasetError
from detector.data.voc import VOCDetection
from detector.evaluation import EvaluationError
from detector.evaluation.coco import evaluate_coco, load_coco_gt, load_results
from detector.model import RetinaNetConfig
from tests.data.fixtures import voc_xml, write_image

# ------------------------------------------------------------------------------------ strategies
EDGE_NUMBERS = [0, -1, 1, 2**31, 2**63, 2**64, -(2**63) - 1, 10**30, 10**400, 1e308, -1e308, 1e-320, math.nan, math.inf,
                -math.inf, 0.5, -0.0]
EDGE_STRINGS = ["", " ", "1", "1e400", "nan", "-5", "../../etc/passwd", "/abs.jpg", "a\x00b", "\u202e\ud7ff",
                "C:\\x.jpg", "é" * 3, "x" * 300]
scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(EDGE_NUMBERS), st.sampled_from(EDGE_STRINGS),
    st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars, lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children,
                                                                                max_size=4),
    max_leaves=8,
)


NUMERIC_KEYS = {"id", "image_id", "category_id", "height", "width", "bbox", "area", "iscrowd", "score"}


def _slots(doc) -> list[tuple]:
    """Every (container, key) of a JSON-like document, the root's own slot first."""
    slots, stack = [], [doc]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            slots.append((node, key))
            stack.append(value)
    return slots


def mutate_document(data, doc, max_ops: int = 4):
    """`doc` (a fresh copy) after up to `max_ops` structural mutations drawn from `data`."""
    holder = [doc]
    for _ in range(data.draw(st.integers(0, max_ops), label="operations")):
        slots = [(holder, 0), *_slots(holder[0])]
        numeric = [(c, k) for c, k in slots if k in NUMERIC_KEYS or (isinstance(c, list) and len(c) == 4)] or slots
        container, key = data.draw(st.sampled_from(slots) | st.sampled_from(numeric), label="where")
        op = data.draw(st.sampled_from(["replace", "delete", "wrap", "duplicate", "nest"]), label="op")
        if op == "replace":
            container[key] = data.draw(st.sampled_from(EDGE_NUMBERS) | json_values, label="value")
        elif op == "delete" and container is not holder:
            del container[key]
        elif op == "wrap":
            container[key] = data.draw(st.sampled_from([[container[key]], {"value": container[key]}]))
        elif op == "duplicate" and isinstance(container, list):
            container.append(json.loads(json.dumps(container[key])))
        elif op == "nest":
            value = container[key]
            for _ in range(data.draw(st.integers(1, 200), label="depth")):
                value = [value]
            container[key] = value
    return holder[0]


def mutate_bytes(data, raw: bytes) -> bytes:
    """`raw` unchanged, truncated, with bytes inserted (often not UTF-8) or nested very deep."""
    op = data.draw(st.sampled_from(["none"] * 7 + ["truncate", "insert", "deep", "digits"]), label="bytes op")
    if op == "digits":  # a number of more digits than Python converts to int (4,300 by default)
        at = next((i for i, c in enumerate(raw) if chr(c).isdigit()), None)
        return raw if at is None else raw[:at] + b"9" * 5000 + raw[at:]
    if op == "truncate":
        return raw[: data.draw(st.integers(0, max(0, len(raw) - 1)), label="cut")]
    if op == "insert":
        at = data.draw(st.integers(0, len(raw)), label="at")
        blob = data.draw(st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\x00", b"\xed\xa0\x80"]) | st.binary(max_size=8))
        return raw[:at] + blob + raw[at:]
    if op == "deep":
        depth = data.draw(st.sampled_from([1000, 100_000]), label="depth")
        return b"[" * depth + raw + b"]" * depth
    return raw


def _one_line(err: BaseException) -> None:
    text = str(err)
    assert text and "\n" not in text and "Traceback" not in text, text


def _dumps(doc) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


# ------------------------------------------------------------------------------------ COCO annotations
COCO_BASE = {
    "images": [{"id": 1, "file_name": "a.jpg", "height": 32, "width": 40},
               {"id": 2, "file_name": "b.png", "height": 24, "width": 24}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 12], "iscrowd": 0, "area": 120},
                    {"id": 2, "image_id": 2, "category_id": 3, "bbox": [5.5, 5, 8, 8]},
                    {"id": 3, "image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 4], "iscrowd": 1}],
    "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}],
}


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_coco")
    write_image(root / "a.jpg", 32, 40)
    write_image(root / "b.png", 24, 24)
    return root


@given(data=st.data())
def test_fuzz_coco_annotation_loader(coco_dir, data):
    doc = mutate_document(data, json.loads(json.dumps(COCO_BASE)))
    ann = coco_dir / "instances.json"
    ann.write_bytes(mutate_bytes(data, _dumps(doc)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # counted DatasetWarnings are part of the documented handling
        try:
            dataset = COCODetection(ann, coco_dir)
            for i in range(len(dataset)):
                item = dataset[i]
                assert item["boxes"].shape == (len(item["labels"]), 4) and np.isfinite(item["boxes"]).all()
                assert ((item["labels"] >= 0) & (item["labels"] < dataset.num_classes)).all()
            dataset.coco_gt()
        except DatasetError as err:
            _one_line(err)


# ------------------------------------------------------------------------------------ VOC XML
XML_TEXTS = st.one_of(st.sampled_from([str(v) for v in EDGE_NUMBERS] + EDGE_STRINGS), st.text(max_size=12),
                      st.integers(-(10**6), 10**6).map(str))


@pytest.fixture(scope="module")
def voc_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_voc")
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (root / sub).mkdir(parents=True)
    write_image(root / "JPEGImages/000001.jpg", 30, 40)
    (root / "ImageSets/Main/trainval.txt").write_text("000001\n")
    return root


NUMERIC_TAGS = {"width", "height", "depth", "xmin", "ymin", "xmax", "ymax", "difficult"}


def _mutate_xml(data, root: ET.Element) -> bytes:
    for _ in range(data.draw(st.integers(0, 4), label="operations")):
        elements = [e for e in root.iter() if e.tag != "deep"]
        numeric = [e for e in elements if e.tag in NUMERIC_TAGS] or elements
        element = data.draw(st.sampled_from(elements) | st.sampled_from(numeric), label="element")
        op = data.draw(st.sampled_from(["text", "remove", "duplicate", "nest", "attribute"]), label="op")
        parent = next((p for p in elements if element in list(p)), None)
        if op == "text":
            element.text = data.draw(XML_TEXTS, label="text")
        elif op == "remove" and parent is not None:
            parent.remove(element)
        elif op == "duplicate" and parent is not None:
            parent.append(copy.deepcopy(element))
        elif op == "nest":  # serialised as bytes below: ElementTree writes nesting by recursion
            ET.SubElement(element, "deep").text = str(data.draw(st.integers(1, 5000), label="depth"))
        elif op == "attribute":
            element.set("difficult", data.draw(XML_TEXTS))
    raw = ET.tostring(root)
    while (start := raw.find(b"<deep>")) >= 0:
        end = raw.index(b"</deep>", start)
        depth = int(raw[start + 6:end])
        raw = raw[:start] + b"<object>" * depth + b"</object>" * depth + raw[end + 7:]
    prolog = data.draw(st.sampled_from([
        b"", b'<?xml version="1.0" encoding="latin-1"?>',
        b'<!DOCTYPE a [<!ENTITY e "xxxxxxxxxxxxxxxxxxxx"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">'
        b'<!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;"><!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">]>',
        b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    ]), label="prolog")
    if prolog.startswith(b"<!DOCTYPE") and data.draw(st.booleans(), label="use entity"):
        raw = raw.replace(b"<name>", b"<name>&" + (b"h" if b"&g;" in prolog else b"x") + b";", 1)
    return mutate_bytes(data, prolog + raw)


@given(data=st.data())
def test_fuzz_voc_xml_parser(voc_dir, data):
    base = voc_xml("000001.jpg", (30, 40), [("dog", (3, 4, 20, 25)), ("cat", (1, 1, 40, 30), 1)])
    (voc_dir / "Annotations/000001.xml").write_bytes(_mutate_xml(data, ET.fromstring(base)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dataset = VOCDetection(voc_dir, None, "trainval")
            for i in range(len(dataset)):
                item = dataset[i]
                assert item["boxes"].shape == (len(item["labels"]), 4) and np.isfinite(item["boxes"]).all()
            dataset.coco_gt()
        except DatasetError as err:
            _one_line(err)


# ------------------------------------------------------------------------------------ COCO results
RESULTS_BASE = [
    {"image_id": 1, "category_id": 1, "bbox": [2.0, 3.0, 10.0, 12.0], "score": 0.9},
    {"image_id": 2, "category_id": 3, "bbox": [5, 5, 8, 8], "score": 0.4},
    {"image_id": 1, "category_id": 3, "bbox": [0.5, 0.5, 30.0, 20.0], "score": 0.1},
]


@pytest.fixture(scope="module")
def results_gt(tmp_path_factory):
    gt = json.loads(json.dumps(COCO_BASE))
    for a in gt["annotations"]:
        a.setdefault("iscrowd", 0)
        a.setdefault("area", a["bbox"][2] * a["bbox"][3])
    return load_coco_gt(gt), tmp_path_factory.mktemp("fuzz_results")


@given(data=st.data())
def test_fuzz_coco_results_loader(results_gt, data):
    coco_gt, folder = results_gt
    doc = mutate_document(data, json.loads(json.dumps(RESULTS_BASE)))
    path = folder / "results.json"
    path.write_bytes(mutate_bytes(data, _dumps(doc)))
    try:
        load_results(path)
        metrics = evaluate_coco(coco_gt, path, print_summary=False)
        assert -1 <= metrics["AP"] <= 1
    except EvaluationError as err:
        _one_line(err)


# ------------------------------------------------------------------------------------ checkpoints
TINY = RetinaNetConfig(num_classes=3, backbone="resnet18", fpn_channels=16, head_convs=1, min_size=64, max_size=64)


@pytest.fixture(scope="module")
def checkpoint_parts(tmp_path_factory):
    """A detector config and a few of its real weights (the head's), small enough to save per example."""
    from detector.model import build_retinanet

    model = build_retinanet(TINY)
    head = {k: v for k, v in model.state_dict().items() if k.startswith("head.")}
    return TINY.to_dict(), head, tmp_path_factory.mktemp("fuzz_ckpt")


def _tensor_like(data):
    return data.draw(st.one_of(
        st.builds(torch.zeros, st.lists(st.integers(0, 3), max_size=3).map(tuple)),
        st.just(torch.tensor([math.nan, math.inf])), st.just(torch.zeros(2, dtype=torch.int8)),
        json_values,
    ), label="tensor")


@given(data=st.data())
def test_fuzz_checkpoint_loader(checkpoint_parts, data):
    config, head, folder = checkpoint_parts
    checkpoint = {"detector_config": mutate_document(data, json.loads(json.dumps(config))),
                  "state_dict": dict(head)}
    state = checkpoint["state_dict"]
    for _ in range(data.draw(st.integers(0, 3), label="weight operations")):
        key = data.draw(st.sampled_from(sorted(state) or ["head.x"]), label="weight")
        op = data.draw(st.sampled_from(["replace", "delete", "prefix"]), label="weight op")
        if op == "replace":
            state[key] = _tensor_like(data)
        elif op == "delete":
            state.pop(key, None)
        else:
            state[f"model.{key}"] = state.pop(key, torch.zeros(1))
    if data.draw(st.booleans(), label="swap top level"):
        top = data.draw(st.sampled_from(["detector_config", "state_dict"]), label="top key")
        checkpoint[top] = data.draw(json_values, label="top value")
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    path: Path = folder / "fuzz.ckpt"
    path.write_bytes(mutate_checkpoint_bytes(data, buffer.getvalue()))
    try:
        model = load_detector(path)
        assert isinstance(model, torch.nn.Module)
    except CheckpointError as err:
        _one_line(err)
        assert "weights_only" not in str(err)


def mutate_checkpoint_bytes(data, raw: bytes) -> bytes:
    """Torch's zip bytes unchanged, truncated, with a span overwritten, or replaced by text."""
    op = data.draw(st.sampled_from(["none", "none", "truncate", "overwrite", "text"]), label="bytes op")
    if op == "truncate":
        return raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")]
    if op == "overwrite":
        at = data.draw(st.integers(0, len(raw) - 1), label="at")
        blob = data.draw(st.binary(min_size=1, max_size=16), label="blob")
        return raw[:at] + blob + raw[at + len(blob):]
    if op == "text":
        return data.draw(st.sampled_from([b"<html>502 Bad Gateway</html>", b"{}", b"\x80\x04N."]), label="text")
    return raw


# ------------------------------------------------------------------------------------ found by fuzzing
# Each of these crashed with an exception other than the project's one-line error before the fix.


def _coco_with(coco_dir, edit) -> Path:
    doc = json.loads(json.dumps(COCO_BASE))
    edit(doc)
    path = coco_dir / "found.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["annotations"][0].__setitem__("bbox", [None, 1, 4, 4]), r"bbox must be 4 numbers, got \[None"),
    (lambda d: d["annotations"][0].__setitem__("bbox", ["2", "3", "10", "12"]), r"bbox must be 4 numbers"),
    (lambda d: d["annotations"][1].__setitem__("bbox", [10**400, 1, 4, 4]), r"annotation 2: bbox must be 4 numbers"),
    (lambda d: d["images"][0].__setitem__("height", 2**64), r"'a\.jpg' declares a width or height out of range"),
    (lambda d: d["images"][0].__setitem__("width", 1e308), r"out of range"),
    (lambda d: d["images"][0].__setitem__("id", 2**64), r"malformed image entry"),
    (lambda d: d["categories"][0].__setitem__("id", 2**64), r"malformed category entry"),
    (lambda d: d["annotations"][0].__setitem__("category_id", 2**64), r"malformed annotation entry"),
])
def test_found_coco_values_out_of_reach_are_one_line_errors(coco_dir, edit, message):
    with pytest.raises(DatasetError, match=message):
        COCODetection(_coco_with(coco_dir, edit), coco_dir)


def test_found_coco_gt_with_unusable_annotation_ids_and_areas(coco_dir):
    def edit(doc):
        doc["annotations"][0]["id"] = [3]  # unhashable: coco_gt crashed
        doc["annotations"][1]["id"] = 3  # now unique again, but the first needs a number
        doc["annotations"][2]["area"] = "big"
        doc["annotations"][2]["iscrowd"] = [1]

    gt = COCODetection(_coco_with(coco_dir, edit), coco_dir).coco_gt()
    ids = sorted(gt.anns)
    assert len(ids) == 3 and len(set(ids)) == 3 and all(isinstance(i, int) and i > 0 for i in ids)
    crowd = [a for a in gt.anns.values() if a["image_id"] == 1 and a["category_id"] == 3][0]
    assert crowd["iscrowd"] == 1 and crowd["area"] == 16.0  # as the training table reads them, area w * h


@pytest.mark.parametrize("value", ["inf", "1e400", str(2**63)])
def test_found_voc_size_out_of_range_is_read_from_the_image(voc_dir, value):
    xml = voc_xml("000001.jpg", (30, 40), [("dog", (3, 4, 20, 25))]).replace("<width>40</width>",
                                                                               f"<width>{value}</width>")
    (voc_dir / "Annotations/000001.xml").write_text(xml)
    dataset = VOCDetection(voc_dir, None, "trainval")
    assert dataset.table.sizes.tolist() == [[30, 40]] and dataset[0]["orig_size"] == (30, 40)


def test_found_a_number_of_5000_digits_is_a_one_line_error(coco_dir, results_gt):
    path = coco_dir / "digits.json"
    path.write_text(json.dumps(COCO_BASE).replace('"id": 1,', '"id": ' + "9" * 5000 + ",", 1))
    with pytest.raises(DatasetError, match=r"digits.json: malformed JSON \(Exceeds the limit"):
        COCODetection(path, coco_dir)
    path.write_text('[{"image_id": ' + "9" * 5000 + "}]")
    with pytest.raises(EvaluationError, match=r"digits.json is not valid JSON: Exceeds the limit"):
        load_results(path)


@pytest.mark.parametrize("field", ["image_id", "category_id", "score"])
def test_found_results_numbers_out_of_range_are_one_line_errors(results_gt, field):
    coco_gt, _ = results_gt
    results = json.loads(json.dumps(RESULTS_BASE))
    results[1][field] = 10**400 if field == "score" else 2**64
    with pytest.raises(EvaluationError, match=r"results entry 1: a number out of range"):
        evaluate_coco(coco_gt, results)
    results[0]["image_id"] = np.int64(1)  # not a plain int: the entry-by-entry path
    with pytest.raises(EvaluationError, match=r"results entry 1: a number out of range"):
        evaluate_coco(coco_gt, results)


def test_found_checkpoint_config_of_absurd_size_or_type_is_refused_without_building(checkpoint_parts):
    config, head, folder = checkpoint_parts
    path = folder / "absurd.ckpt"
    for change, message in (({"fpn_channels": 10**7}, "weights do not fit the stored config"),
                            ({"fpn_channels": "16"}, r"bad detector config \(TypeError"),
                            ({"backbone": "resnet9000"}, "bad detector config")):
        torch.save({"detector_config": {**config, **change}, "state_dict": head}, path)
        with pytest.raises(CheckpointError, match=message):
            load_detector(path)
