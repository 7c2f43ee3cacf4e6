import math

import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

from detector.model import BoxCoder


def test_encode_by_hand():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    boxes = torch.tensor([[5.0, 10.0, 25.0, 30.0]])
    d = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)).encode(anchors, boxes)
    # anchor centre (5, 10) size (10, 20); box centre (15, 20) size (20, 20)
    expected = torch.tensor([[10 * 10 / 10, 10 * 10 / 20, 5 * math.log(2.0), 5 * math.log(1.0)]])
    torch.testing.assert_close(d, expected)


def test_round_trip_and_torchvision_equivalence():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(500, 2, generator=g) * 500
    anchors = torch.cat([xy, xy + 4 + torch.rand(500, 2, generator=g) * 200], dim=1)
    xy2 = torch.rand(500, 2, generator=g) * 500
    boxes = torch.cat([xy2, xy2 + 4 + torch.rand(500, 2, generator=g) * 200], dim=1)
    weights = (1.0, 1.0, 1.0, 1.0)
    coder = BoxCoder(weights)
    deltas = coder.encode(anchors, boxes)
    torch.testing.assert_close(coder.decode(deltas, anchors), boxes, rtol=0, atol=1e-3)
    tv = TVBoxCoder(weights)
    torch.testing.assert_close(deltas, tv.encode_single(boxes, anchors), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(coder.decode(deltas, anchors), tv.decode_single(deltas, anchors), rtol=0, atol=1e-4)


def test_decode_clamps_and_stays_float32_under_autocast():
    coder = BoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    huge = torch.tensor([[0.0, 0.0, 50.0, 50.0]], dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = coder.decode(huge, anchors)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, 2] - out[0, 0], torch.tensor(1000.0), rtol=1e-5, atol=0)  # 16 * 1000/16


def test_batched_shapes():
    coder = BoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 8.0, 8.0], [4.0, 4.0, 20.0, 12.0]])
    deltas = torch.zeros(3, 2, 4)
    torch.testing.assert_close(coder.decode(deltas, anchors[None].expand(3, 2, 4)), anchors[None].expand(3, 2, 4))
