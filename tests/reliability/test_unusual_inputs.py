"""Valid but unusual inputs: read correctly, or refused in one line naming the file and the entry."""

from __future__ import annotations

import json

import pytest

from detector.data import COCODetection
from detector.data.errors import DatasetError
from detector.data.voc import parse_voc_xml
from tests.data.fixtures import coco_json, load_script, voc_xml, write_image


def test_a_voc_xml_with_a_default_namespace_reads_as_without_it(tmp_path):
    plain = voc_xml("a.jpg", (40, 50), [("dog", (2, 3, 20, 30)), ("cat", (5, 6, 40, 35), 1)])
    spaced = plain.replace("<annotation>", '<annotation xmlns="http://example.org/voc">', 1)
    (tmp_path / "plain.xml").write_text(plain)
    (tmp_path / "spaced.xml").write_text(spaced)
    parsed = parse_voc_xml(tmp_path / "spaced.xml")
    assert parsed == parse_voc_xml(tmp_path / "plain.xml")
    assert [o["name"] for o in parsed["objects"]] == ["dog", "cat"] and parsed["size"] == (40, 50)


def _coco(tmp_path, categories, file_name="a.jpg", extra=None):
    write_image(tmp_path / "images" / "a.jpg", 40, 50)
    data = coco_json([(1, file_name, 40, 50)], [{"image_id": 1, "category_id": categories[0][0], "bbox": [2, 3, 10, 12]}],
                     categories)
    path = tmp_path / "instances.json"
    text = json.dumps({**data, **(extra or {})})
    path.write_text(text)
    return path


def test_a_negative_category_id_is_refused_at_setup_naming_file_and_category(tmp_path, capsys):
    path = _coco(tmp_path, [(-3, "ghost"), (2, "dog")])
    with pytest.raises(DatasetError) as err:
        COCODetection(path, tmp_path / "images")
    assert str(err.value) == f"{path}: categories[0] ('ghost') has id -3: a category id must be 0 or more to be scored"
    # the same rule for a ground-truth file given to evaluate.py
    (tmp_path / "results.json").write_text("[]")
    assert load_script("evaluate").main(["--gt", str(path), "--results", str(tmp_path / "results.json")]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "('ghost') has id -3" in err_lines[0] and str(path) in err_lines[0]


def test_an_info_nested_600_deep_is_read_and_scored(tmp_path, capsys):
    path = _coco(tmp_path, [(2, "dog")])
    text = path.read_text()[:-1] + ', "info": ' + "[" * 600 + "]" * 600 + "}"
    path.write_text(text)
    dataset = COCODetection(path, tmp_path / "images")
    assert dataset.class_names == ["dog"] and len(dataset) == 1
    # one exact detection of the one box: AP 1 by hand
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 1, "category_id": 2, "bbox": [2, 3, 10, 12], "score": 0.9}]))
    out = tmp_path / "metrics.json"
    assert load_script("evaluate").main(["--gt", str(path), "--results", str(results), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["AP"] == pytest.approx(1.0)


def test_a_file_name_with_a_nul_byte_is_one_line(tmp_path):
    path = _coco(tmp_path, [(2, "dog")], file_name="a\x00.jpg")
    with pytest.raises(DatasetError) as err:
        COCODetection(path, tmp_path / "images")[0]
    assert str(err.value) == f"{path}: file_name 'a\\x00.jpg' contains a NUL character"


def test_an_onnx_file_not_exported_here_is_one_line(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "foreign",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    foreign = tmp_path / "foreign.onnx"
    onnx.save(model, str(foreign))
    write_image(tmp_path / "in" / "a.png", 8, 8)
    with pytest.raises(SystemExit) as exit_info:
        load_script("predict").main(["--onnx", str(foreign), "--input", str(tmp_path / "in"), "--out",
                                     str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert err == [f"error: {foreign}: not a detector exported by scripts/export.py (inputs x [1, 3, 8, 8]; outputs y; "
                   "expected one (N, 3, H, W) input and outputs boxes, scores, labels, num_detections)"]


@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_evaluate_range_checks_its_batch_size(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        load_script("evaluate").main(["--checkpoint", str(tmp_path / "m.ckpt"), "--config", "c.yaml",
                                      "--batch-size", value])
    assert exit_info.value.code == 2
    assert f"argument --batch-size: {value!r} is not an integer >= 1" in capsys.readouterr().err
