"""Our RetinaNet against torchvision's, with the same random weights (imported by the script)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.models.detection import retinanet_resnet50_fpn

import detector
from detector.interop import from_torchvision

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def torchvision_model():
    torch.manual_seed(0)
    model = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=7, min_size=320, max_size=480)
    with torch.no_grad():  # many scores above 0.05 so that top-k, threshold and NMS all matter
        model.head.classification_head.cls_logits.bias.uniform_(-3.0, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, 300, 410, generator=g), torch.rand(3, 352, 270, generator=g)]


def test_imported_detections_equal_torchvision(torchvision_model, images, tmp_path):
    src = tmp_path / "tv.pth"
    torch.save(torchvision_model.state_dict(), src)
    out = tmp_path / "ours.ckpt"
    subprocess.run([sys.executable, str(ROOT / "scripts/import_torchvision.py"), "--src", str(src), "--out", str(out)],
                   check=True, capture_output=True)
    ours = detector.load_detector(out)
    ours.config.min_size, ours.config.max_size = 320, 480  # the reference model's test-time size
    with torch.no_grad():
        expected = torchvision_model(images)
    got = ours.predict(images)
    for e, g in zip(expected, got):
        assert len(e["boxes"]) > 50  # the test exercises many detections
        _assert_same_detections(g, e)


def _assert_same_detections(got: dict, expected: dict) -> None:
    """One to one: each expected detection has its own detection in `got` of the same label, box
    within 1e-3 px and score within 1e-4. Order-free: two detections whose scores differ by a
    float rounding may come in either order (the resize rounds differently from torchvision's)."""
    assert len(got["boxes"]) == len(expected["boxes"])
    free = torch.ones(len(got["boxes"]), dtype=torch.bool)
    for box, score, label in zip(expected["boxes"], expected["scores"], expected["labels"]):
        close = free & (got["labels"] == label) & ((got["scores"] - score).abs() <= 1e-4) \
            & ((got["boxes"] - box).abs().amax(dim=1) <= 1e-3)
        assert close.any(), (box, score, label)
        free[close.nonzero()[0, 0]] = False


def test_loss_equals_torchvision_at_batch_size_one(torchvision_model, images):
    # torchvision's randomly initialised model trains its BatchNorm (batch statistics): so do we here
    ours = from_torchvision(torchvision_model.state_dict(), min_size=320, max_size=480, freeze_bn=False)
    image = images[0]
    boxes = torch.tensor([[20.0, 30.0, 120.0, 90.0], [200.0, 150.0, 260.0, 290.0], [5.0, 5.0, 40.0, 25.0]])
    labels = torch.tensor([1, 4, 6])
    tv = torchvision_model.train()
    try:
        expected = tv([image], [{"boxes": boxes, "labels": labels}])
    finally:
        tv.eval()
    ours.train()
    batch, sizes = ours.preprocess([image])
    scale = sizes[0].float() / torch.tensor(image.shape[-2:], dtype=torch.float32)
    scaled = boxes * torch.stack([scale[1], scale[0], scale[1], scale[0]])
    parts, _ = ours.loss(ours(batch), scaled[None], labels[None], torch.ones(1, 3, dtype=torch.bool))
    assert parts["loss_cls"].item() == pytest.approx(expected["classification"].item(), abs=1e-4)
    assert parts["loss_box"].item() == pytest.approx(expected["bbox_regression"].item(), abs=1e-4)


def test_v2_weights_import_and_detect_the_same(images):
    """torchvision's v2 (GroupNorm heads, P6 from C5, GIoU) is recognised from its state dict."""
    from torchvision.models.detection import retinanet_resnet50_fpn_v2

    torch.manual_seed(2)
    tv = retinanet_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=4, min_size=256, max_size=320)
    with torch.no_grad():
        tv.head.classification_head.cls_logits.bias.uniform_(-3.0, 0.5)
    tv.eval()
    ours = from_torchvision(tv.state_dict(), min_size=256, max_size=320)
    assert ours.config.p6_from == "c5" and ours.config.head_group_norm and ours.config.box_loss == "giou"
    with torch.no_grad():
        expected = tv(images)
    for e, g in zip(expected, ours.predict(images)):
        assert len(e["boxes"]) > 20
        _assert_same_detections(g, e)


def test_normalised_input_equals_torchvision_transform_and_its_zero_padding(images):
    """predict()'s batch (resized in [0, 1], padded with the mean colour) normalised by forward's one
    normalisation is torchvision's GeneralizedRCNNTransform batch (normalised, resized, padded with 0):
    the padding exactly, the image within float rounding of the other order."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    from detector.model import build_retinanet
    from detector.model.preprocess import normalize

    model = build_retinanet(num_classes=2, backbone="resnet18", fpn_channels=16, min_size=320, max_size=480,
                            size_divisible=32)
    c = model.config
    reference = GeneralizedRCNNTransform(320, 480, list(c.image_mean), list(c.image_std), size_divisible=32).eval()
    expected = reference(images)[0]
    batch, sizes = model.preprocess(images)
    got = normalize(batch, model.image_mean, model.image_std)
    assert got.shape == expected.tensors.shape and sizes.tolist() == [list(s) for s in expected.image_sizes]
    for i, (h, w) in enumerate(sizes.tolist()):
        pad = torch.ones(got.shape[-2:], dtype=torch.bool)
        pad[:h, :w] = False
        assert pad.any() and torch.equal(got[i][:, pad], torch.zeros_like(got[i][:, pad]))
        torch.testing.assert_close(got[i], expected.tensors[i], rtol=0, atol=1e-5)
    # a uint8 batch is read as value / 255 before the normalisation
    as_uint8 = (batch * 255).round().to(torch.uint8)
    torch.testing.assert_close(model.features(as_uint8)[0], model.features(as_uint8.float() / 255)[0])
