"""scripts/predict.py --onnx: an exported model through onnxruntime, the same outputs as with --checkpoint."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from .helpers import assert_same_detections

from tests.data.fixtures import load_script

pytest.importorskip("onnxruntime")


def read_detections(path: Path) -> dict[str, dict]:
    """detections.json -> {file name: {"boxes" XYXY, "scores", "labels"}}, with the category names seen."""
    per_file = defaultdict(list)
    for d in json.loads(path.read_text()):
        per_file[d["file_name"]].append(d)
    out = {}
    for name, dets in per_file.items():
        xywh = torch.tensor([d["bbox"] for d in dets])
        out[name] = {"boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1),
                     "scores": torch.tensor([d["score"] for d in dets]),
                     "labels": torch.tensor([d["label"] for d in dets]),
                     "categories": {d.get("category") for d in dets}}
    return out


@pytest.fixture(scope="module")
def onnx_model(tiny_onnx):
    return tiny_onnx


def test_predict_onnx_on_a_folder_equals_checkpoint(tiny_checkpoint, onnx_model, image_files, tmp_path):
    predict = load_script("predict").main
    folder = image_files[0].parent
    common = ["--input", str(folder), "--min-score", "0.05"]
    # one image a batch on the eager side: the exported graph never pads one image to another's size
    assert predict(["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "eager"), "--batch-size", "1",
                    *common]) == 0
    assert predict(["--onnx", str(onnx_model), "--out", str(tmp_path / "onnx"), *common]) == 0
    eager = read_detections(tmp_path / "eager" / "detections.json")
    onnx = read_detections(tmp_path / "onnx" / "detections.json")
    assert sorted(onnx) == sorted(eager) == sorted(p.name for p in image_files)
    for name in eager:
        assert_same_detections(onnx[name], eager[name], detections_per_img=100)
        assert onnx[name]["categories"] == eager[name]["categories"] <= {"a", "b", "c", "d", "e"}
    assert sorted(p.name for p in (tmp_path / "onnx").glob("*.png")) == sorted(f"{p.name}.png" for p in image_files)


def test_predict_onnx_without_onnxruntime_names_the_extra(onnx_model, image_files, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    predict = load_script("predict").main
    with pytest.raises(SystemExit) as exit_info:
        predict(["--onnx", str(onnx_model), "--input", str(image_files[0]), "--out", str(tmp_path / "p")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['error: onnxruntime is not installed: pip install -e ".[export]"']


def test_predict_onnx_bad_file_is_one_line(image_files, tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    predict = load_script("predict").main
    with pytest.raises(SystemExit):
        predict(["--onnx", str(bad), "--input", str(image_files[0]), "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "bad.onnx" in err[0]
