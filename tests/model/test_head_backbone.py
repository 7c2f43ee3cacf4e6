import math
from urllib.error import URLError

import pytest
import torch

from detector.model import build_retinanet
from detector.model.backbone import BackboneError, ResNetFPN
from detector.model.head import RetinaNetHead


def test_prior_bias_and_gaussian_init():
    head = RetinaNetHead(64, 9, 5, prior_prob=0.01)
    bias = head.classification_head.cls_logits.bias
    assert torch.allclose(bias, torch.full_like(bias, -math.log(99.0)))
    assert abs(bias[0].item() - (-4.59512)) < 1e-4
    w = head.classification_head.conv[0][0].weight
    assert abs(w.std().item() - 0.01) < 0.001 and head.regression_head.bbox_reg.bias.abs().max() == 0
    no_prior = RetinaNetHead(64, 9, 5, prior_prob=None)
    assert no_prior.classification_head.cls_logits.bias.abs().max() == 0


def test_head_flattening_is_position_then_anchor():
    head = RetinaNetHead(8, 2, 3, num_convs=0)
    torch.nn.init.zeros_(head.classification_head.cls_logits.weight)
    # make the logit equal to its channel index a * K + k via the bias
    head.classification_head.cls_logits.bias.data = torch.arange(6, dtype=torch.float32)
    feats = [torch.zeros(1, 8, 2, 3), torch.zeros(1, 8, 1, 1)]
    logits, deltas = head(feats)
    assert logits.shape == (1, (6 + 1) * 2, 3) and deltas.shape == (1, 14, 4)
    # each position repeats [anchor 0: classes 0..2, anchor 1: classes 3..5]
    assert logits[0, :2].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert logits[0, 12:].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_backbone_levels_and_strides():
    net = ResNetFPN("resnet18", out_channels=32)
    feats = net(torch.zeros(1, 3, 256, 384))
    assert [tuple(f.shape[-2:]) for f in feats] == [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
    assert all(f.shape[1] == 32 for f in feats)


def test_p6_from_c5_or_p5():
    assert ResNetFPN("resnet18", out_channels=32, p6_from="c5").fpn.extra_blocks.p6.in_channels == 512
    p5 = ResNetFPN("resnet18", out_channels=512, p6_from="p5").fpn.extra_blocks
    c5 = ResNetFPN("resnet18", out_channels=512, p6_from="c5").fpn.extra_blocks
    assert p5.use_P5 and not c5.use_P5  # same channel count, different source


def test_freezing():
    net = ResNetFPN("resnet18", out_channels=32, frozen_stages=2, freeze_bn=True)
    body = net.body
    assert not any(p.requires_grad for p in body.conv1.parameters())
    assert not any(p.requires_grad for p in body.layer1.parameters())
    assert all(p.requires_grad for p in body.layer2.parameters() if p.dtype.is_floating_point)
    assert type(body.bn1).__name__ == "FrozenBatchNorm2d"


def test_clear_errors(monkeypatch):
    with pytest.raises(BackboneError, match="unknown backbone"):
        ResNetFPN("vgg16")
    with pytest.raises(BackboneError, match="unknown weights"):
        ResNetFPN("resnet18", weights="NOPE")

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr("torch.hub.load_state_dict_from_url", offline)
    with pytest.raises(BackboneError, match="without internet"):
        ResNetFPN("resnet18", weights="IMAGENET1K_V1")


def test_model_outputs_match_anchor_count():
    model = build_retinanet(num_classes=4, backbone="resnet18", fpn_channels=32, head_convs=1)
    out = model(torch.zeros(2, 3, 128, 256))
    assert out.cls_logits.shape == (2, out.anchors.shape[0], 4)
    assert sum(out.num_anchors_per_level) == out.anchors.shape[0]


def test_group_norm_head_builds_and_matches_torchvision_v2_names():
    from torchvision.models.detection.retinanet import RetinaNetHead as TVHead

    ours = RetinaNetHead(64, 9, 5, group_norm=True)
    assert isinstance(ours.classification_head.conv[0][1], torch.nn.GroupNorm)
    assert ours.classification_head.conv[0][0].bias is None  # the norm carries the bias
    from functools import partial

    tv = TVHead(64, 9, 5, norm_layer=partial(torch.nn.GroupNorm, 32))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in tv.state_dict().items()}
