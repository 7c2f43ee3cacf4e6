"""One resized size per image: the training transform, predict(), the ONNX graph and the .pt2 agree
with torchvision's GeneralizedRCNNTransform on real-photo sizes, and a too-thin image is refused alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from detector import build_retinanet
from detector.data import build_transforms
from detector.export.exporters import export_onnx, export_program
from detector.model.preprocess import MIN_RESIZED_SIDE, ImageTooThinError

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

#: VOC and COCO photo sizes (h, w), 1:8 and 8:1 panoramas, and a 3 x 3000 strip.
SIZES = [(335, 500), (333, 500), (375, 500), (500, 375), (480, 640), (427, 640), (60, 480), (480, 60), (3, 3000)]
#: torchvision's defaults, and configs/synthetic.yaml's data.min_size / max_size.
SETTINGS = [(800, 1333), (256, 256)]


def torchvision_size(h: int, w: int, min_size: int, max_size: int):
    """The (h', w') torchvision's own transform resizes to, or None when a side would be below MIN_RESIZED_SIDE."""
    reference = GeneralizedRCNNTransform(min_size, max_size, [0.0] * 3, [1.0] * 3).eval()
    try:
        size = reference([torch.zeros(3, h, w)])[0].image_sizes[0]
    except RuntimeError:  # F.interpolate refuses an empty output
        return None
    return None if min(size) < MIN_RESIZED_SIDE else tuple(size)


def onnx_resized_size(path, h: int, w: int) -> tuple[int, int]:
    """The output size of the exported graph's bilinear Resize node, read by making it a graph output."""
    model = onnx.load(str(path))
    resize = [node for node in model.graph.node if node.op_type == "Resize"
              and any(a.name == "mode" and a.s == b"linear" for a in node.attribute)]  # the FPN's are "nearest"
    assert len(resize) == 1, "the graph resizes the image once"
    model.graph.output.append(onnx.helper.make_tensor_value_info(resize[0].output[0], onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    resized = session.run([resize[0].output[0]], {"images": np.zeros((1, 3, h, w), np.float32)})[0]
    return tuple(resized.shape[-2:])


def program_resized_size(program, h: int, w: int) -> tuple[int, int]:
    """The output size of the .pt2's bilinear upsampling, recorded while it runs."""
    seen = []

    class Recorder(torch.fx.Interpreter):
        def run_node(self, node):
            out = super().run_node(node)
            if node.op == "call_function" and "upsample_bilinear2d" in str(node.target):
                seen.append(tuple(out.shape[-2:]))
            return out

    with torch.no_grad():
        Recorder(program.module()).run(torch.zeros(1, 3, h, w))
    assert len(seen) == 1, "the program resizes once"
    return seen[0]


@pytest.fixture(scope="module", params=SETTINGS, ids=lambda s: f"{s[0]}-{s[1]}")
def exported(request, tmp_path_factory):
    min_size, max_size = request.param
    model = build_retinanet(num_classes=2, backbone="resnet18", fpn_channels=16, head_convs=1, min_size=min_size,
                            max_size=max_size).eval()
    path = export_onnx(model, tmp_path_factory.mktemp("sizes") / "m.onnx")
    return model, path, export_program(model)


@pytest.mark.slow
def test_every_path_resizes_to_torchvisions_size(exported):
    model, onnx_path, program = exported
    min_size, max_size = model.config.min_size, model.config.max_size
    thin = 0
    for h, w in SIZES:
        expected = torchvision_size(h, w, min_size, max_size)
        image = np.zeros((h, w, 3), np.uint8)
        train, evaluate = build_transforms(True, min_size, max_size, seed=0), build_transforms(False, min_size, max_size)
        if expected is None:  # too thin: every path refuses it with the same error
            thin += 1
            for transform in (train, evaluate):
                with pytest.raises(ImageTooThinError):
                    transform(image, np.zeros((0, 4)), np.zeros(0))
            with pytest.raises(ImageTooThinError):
                model.preprocess([torch.zeros(3, h, w)])
            continue
        for transform in (train, evaluate):
            assert transform(image, np.zeros((0, 4)), np.zeros(0))[0].shape[:2] == expected, (h, w, "transform")
        assert tuple(model.preprocess([torch.zeros(3, h, w)])[1][0].tolist()) == expected, (h, w, "predict")
        assert onnx_resized_size(onnx_path, h, w) == expected, (h, w, "onnx")
        assert program_resized_size(program, h, w) == expected, (h, w, "pt2")
    assert thin == (1 if min_size == 256 else 0)  # 3 x 3000 at 256 / 256 (0 x 256) is the one too thin
