"""RetinaNetConfig.implementation: the readable rules and the fast paths give the same model outputs."""

import pytest
import torch

from detector.model import RetinaNetConfig, build_retinanet


def _pair():
    common = dict(num_classes=4, backbone="resnet18", fpn_channels=16, head_convs=1, min_size=96, max_size=128,
                  prior_prob=0.2, score_thresh=0.1)
    fast = build_retinanet(implementation="fast", **common)
    reference = build_retinanet(implementation="reference", **common)
    reference.load_state_dict(fast.state_dict())
    return fast.eval(), reference.eval()


def test_loss_and_detections_are_the_same_on_both_paths():
    fast, reference = _pair()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 128, 128, generator=g)
    xy = torch.rand(2, 20, 2, generator=g) * 90
    boxes = torch.cat([xy, xy + 6 + torch.rand(2, 20, 2, generator=g) * 30], dim=-1)  # 20 boxes: the culled matcher
    labels = torch.randint(0, 4, (2, 20), generator=g)
    valid = torch.ones(2, 20, dtype=torch.bool)
    valid[1, 12:] = False
    outputs = fast(images)
    parts_fast, stats_fast = fast.loss(outputs, boxes, labels, valid)
    parts_ref, stats_ref = reference.loss(outputs, boxes, labels, valid)
    for name in ("loss_cls", "loss_box", "loss"):
        torch.testing.assert_close(parts_fast[name], parts_ref[name], rtol=1e-5, atol=1e-7)
    assert stats_fast.as_dict() == pytest.approx(stats_ref.as_dict(), rel=1e-5)
    sizes = torch.tensor([[128, 128], [100, 120]])
    for a, b in zip(fast.detect(outputs, sizes), reference.detect(outputs, sizes)):
        assert len(a["scores"]) > 0
        torch.testing.assert_close(a["scores"], b["scores"], rtol=0, atol=0)
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=1e-4)
        assert torch.equal(a["labels"], b["labels"])


def test_unknown_implementation_and_removed_keys():
    with pytest.raises(ValueError, match="implementation must be one of"):
        build_retinanet(num_classes=2, backbone="resnet18", fpn_channels=16, implementation="turbo")
    # keys older checkpoints hold, at the only value they ever took, load; any other value is refused
    old = {**RetinaNetConfig().to_dict(), "box_weights": [1, 1, 1, 1], "box_loss_weight": 1.0, "compile_cls_loss": None}
    assert RetinaNetConfig.from_dict(old) == RetinaNetConfig()
    with pytest.raises(ValueError, match="unknown RetinaNetConfig keys: box_loss_weight"):
        RetinaNetConfig.from_dict({**old, "box_loss_weight": 2.0})
