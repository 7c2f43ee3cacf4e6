"""Exported graphs (ONNX through onnxruntime, torch.export) against the eager model's predict()."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.models.detection import retinanet_resnet50_fpn

from detector import load_detector, save_detector
from detector.export import NO_LABEL, ExportableDetector, unpad
from detector.export.command import main as export_main

from .helpers import assert_same_detections, tiny_detector

ort = pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[2]


def run_onnx(path, batch: torch.Tensor) -> list[dict]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"images": batch.numpy()})
    return unpad(*(torch.from_numpy(o) for o in outputs))


def check_equal(model, batches, run) -> int:
    """Every image of every batch: `run(batch)` detections equal to model.predict's; returns the count compared."""
    compared = 0
    for batch in batches:
        expected = model.predict(list(batch))
        got = run(batch)
        assert len(got) == len(batch)
        for g, e in zip(got, expected):
            assert_same_detections(g, e, model.config.detections_per_img)
            compared += len(e["scores"])
    return compared


@pytest.fixture(scope="module")
def onnx_file(tiny_onnx):
    return tiny_onnx


def test_onnx_detections_equal_predict_on_three_sizes_and_a_batch(tiny_checkpoint, onnx_file, image_batches):
    model = load_detector(tiny_checkpoint)
    compared = check_equal(model, image_batches, lambda batch: run_onnx(onnx_file, batch))
    assert compared >= 400  # many detections, so that top-k, NMS and the cut at D all matter


def test_onnx_output_layout(onnx_file):
    import onnx

    graph = onnx.load(str(onnx_file)).graph
    assert [i.name for i in graph.input] == ["images"]
    assert [o.name for o in graph.output] == ["boxes", "scores", "labels", "num_detections"]
    assert any(node.op_type == "NonMaxSuppression" for node in graph.node)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    boxes, scores, labels, count = session.run(None, {"images": torch.zeros(2, 3, 97, 131).numpy()})
    d = 100  # the tiny model's detections_per_img
    assert boxes.shape == (2, d, 4) and scores.shape == (2, d) and labels.shape == (2, d) and count.shape == (2,)
    for n in range(2):  # padding rows after the detections
        assert (labels[n, count[n]:] == NO_LABEL).all() and (scores[n, count[n]:] == 0).all()
        assert (scores[n, : count[n]] > 0.05).all()


@pytest.mark.parametrize("min_size,max_size", [(800, 1333), (256, 400), (320, 480)])
def test_resized_size_is_interpolates_output_size(min_size, max_size):
    # both paths (tensors, as traced for ONNX, and ints) against F.interpolate's own output size
    from detector.model.preprocess import resized_size

    for h, w in [(480, 640), (640, 480), (300, 410), (128, 128), (97, 131), (7, 999), (600, 800), (333, 500)]:
        scale = min(min_size / min(h, w), max_size / max(h, w))
        expected = torch.nn.functional.interpolate(torch.zeros(1, 1, h, w), scale_factor=scale, mode="bilinear",
                                                   recompute_scale_factor=True).shape[-2:]
        assert resized_size(h, w, min_size, max_size) == tuple(expected)
        as_tensors = resized_size(torch.tensor(h), torch.tensor(w), min_size, max_size)
        assert tuple(int(v) for v in as_tensors) == tuple(expected)


def test_eager_wrapper_equals_predict(tiny_checkpoint, image_batches):
    # the traceable rule itself, without any exporter in between (the batch of three)
    model = load_detector(tiny_checkpoint)
    wrapper = ExportableDetector(model).eval()
    with torch.no_grad():
        check_equal(model, [max(image_batches, key=len)], lambda batch: unpad(*wrapper(batch)))


@pytest.mark.slow
def test_torch_export_detections_equal_predict(image_batches, tmp_path):
    checkpoint = tmp_path / "tiny_one_conv.ckpt"  # one conv per subnet: torch.export's tracing is the slow part
    save_detector(tiny_detector(head_convs=1), checkpoint)
    out = tmp_path / "tiny.pt2"
    assert export_main(["--checkpoint", str(checkpoint), "--format", "torch-export", "--out", str(out)]) == 0
    program = torch.export.load(str(out)).module()
    model = load_detector(checkpoint)
    check_equal(model, image_batches, lambda batch: unpad(*program(batch)))


@pytest.mark.slow
def test_torchvision_imported_checkpoint_exports(tmp_path, image_batches):
    torch.manual_seed(0)
    reference = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4)
    with torch.no_grad():  # many scores above 0.05 so that NMS and the cut matter
        reference.head.classification_head.cls_logits.bias.uniform_(-3.0, 0.5)
    torch.save(reference.state_dict(), tmp_path / "tv.pth")
    ckpt = tmp_path / "tv.ckpt"
    subprocess.run([sys.executable, str(ROOT / "scripts/import_torchvision.py"), "--src", str(tmp_path / "tv.pth"),
                    "--out", str(ckpt)], check=True, capture_output=True)
    model = load_detector(ckpt)
    # smaller inputs than torchvision's 800/1333 keep the test quick; padding stays at torchvision's 32
    model.config.min_size, model.config.max_size = 224, 320
    save_detector(model, ckpt)
    out = tmp_path / "tv.onnx"
    assert export_main(["--checkpoint", str(ckpt), "--out", str(out)]) == 0
    batch = image_batches[0][:1]
    compared = check_equal(model, [batch, torch.rand(2, 3, 250, 330, generator=torch.Generator().manual_seed(3))],
                           lambda b: run_onnx(out, b))
    assert compared > 100


def test_export_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export_main(["--checkpoint", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "m.onnx")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "missing.ckpt" in err[0]


def test_onnx_export_without_onnx_names_the_extra(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        export_main(["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "m.onnx")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == ['error: onnx is not installed: pip install -e ".[export]"']
    assert not (tmp_path / "m.onnx").exists()
