import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from detector.model import AnchorGenerator


def test_single_level_anchors_by_hand():
    gen = AnchorGenerator(sizes=(32,), scales=(1.0,), ratios=(0.5, 1.0, 2.0))
    anchors = gen((16, 16), [(2, 2)])
    assert anchors.shape == (2 * 2 * 3, 4)
    # ratio = h / w, area 32^2: r=0.5 -> w=32*sqrt(2), h=32/sqrt(2)
    half_w = [16 * math.sqrt(2), 16.0, 16 / math.sqrt(2)]
    half_h = [16 / math.sqrt(2), 16.0, 16 * math.sqrt(2)]
    expected = []
    for y in (0.0, 8.0):  # position-major (y, then x), then anchor
        for x in (0.0, 8.0):
            for hw, hh in zip(half_w, half_h):
                expected.append([x - hw, y - hh, x + hw, y + hh])
    torch.testing.assert_close(anchors, torch.tensor(expected), rtol=0, atol=1e-5)


def test_scales_are_ratio_major_and_area_preserving():
    scales = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    cell = AnchorGenerator(sizes=(32,), scales=scales, ratios=(0.5, 1.0, 2.0)).cell_anchors(0)
    w, h = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
    areas = (w * h).view(3, 3)  # ratio-major: rows are ratios, columns scales
    for j, s in enumerate(scales):
        torch.testing.assert_close(areas[:, j], torch.full((3,), (32 * s) ** 2), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close((h / w).view(3, 3)[:, 0], torch.tensor([0.5, 1.0, 2.0]), rtol=1e-5, atol=0)


def test_counts_and_nominal_strides_for_padded_batch():
    gen = AnchorGenerator()
    sizes = [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
    anchors = gen((256, 384), sizes)
    assert gen.num_anchors_per_level(sizes) == [h * w * 9 for h, w in sizes]
    assert anchors.shape[0] == sum(h * w * 9 for h, w in sizes)
    p4 = anchors[32 * 48 * 9 :][: 16 * 24 * 9].view(16, 24, 9, 4)
    centres = (p4[..., :2] + p4[..., 2:]) / 2
    assert torch.allclose(centres[1, 2, 0], torch.tensor([2 * 16.0, 1 * 16.0]))  # stride 16


@pytest.mark.parametrize("image_size", [(320, 448), (800, 1216)])
def test_equals_torchvision_with_torchvision_rounding(image_size):
    tv_sizes = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in [32, 64, 128, 256, 512])
    tv = TVAnchorGenerator(tv_sizes, ((0.5, 1.0, 2.0),) * 5)
    feats = [torch.zeros(1, 1, math.ceil(image_size[0] / s), math.ceil(image_size[1] / s)) for s in (8, 16, 32, 64, 128)]
    expected = tv(ImageList(torch.zeros(1, 3, *image_size), [image_size]), feats)[0]
    ours = AnchorGenerator(torchvision_rounding=True)(image_size, [f.shape[-2:] for f in feats])
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)


def test_bad_arguments():
    with pytest.raises(ValueError):
        AnchorGenerator(sizes=())
    with pytest.raises(ValueError):
        AnchorGenerator(ratios=(0.0, 1.0))
    with pytest.raises(ValueError, match="feature levels"):
        AnchorGenerator()((256, 256), [(32, 32)])
