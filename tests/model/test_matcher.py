import functools

import pytest
import torch
from torchvision.models.detection._utils import Matcher as TVMatcher
from torchvision.ops import box_iou

from detector.model import BACKGROUND, IGNORE, IMPLEMENTATIONS, Matcher, fast_matcher


@pytest.fixture(params=IMPLEMENTATIONS)
def Impl(request):
    """Matcher running the rule (an IoU matrix) or the fast path: each test runs both."""
    return functools.partial(Matcher, implementation=request.param)


def test_hand_built_iou_matrix(Impl):
    # anchors of 10x10; IoU with gt [0,0,10,10] is set by the horizontal overlap.
    anchors = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],   # IoU 1.0 -> fg
        [2.0, 0.0, 12.0, 10.0],   # overlap 8: 80/120 = 0.667 -> fg
        [5.0, 0.0, 15.0, 10.0],   # overlap 5: 50/150 = 0.333 -> bg
        [4.0, 0.0, 14.0, 10.0],   # overlap 6: 60/140 = 0.4286 -> ignore
        [50.0, 50.0, 60.0, 60.0], # IoU 0 -> bg
    ])
    gt = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    matches = Impl(0.5, 0.4, allow_low_quality_matches=False)(gt, torch.tensor([[True]]), anchors)
    assert matches.tolist() == [[0, 0, BACKGROUND, IGNORE, BACKGROUND]]


def test_low_quality_match_rescues_a_small_box(Impl):
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]])
    gt = torch.tensor([[[0.0, 0.0, 4.0, 4.0]]])  # IoU 0.16 with its best anchor
    valid = torch.tensor([[True]])
    assert Impl(allow_low_quality_matches=False)(gt, valid, anchors).tolist() == [[BACKGROUND, BACKGROUND]]
    assert Impl(allow_low_quality_matches=True)(gt, valid, anchors).tolist() == [[0, BACKGROUND]]


def test_padded_batch_with_empty_image_and_padding_never_matches(Impl):
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]])
    gt = torch.tensor([
        [[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]],  # padding slot sits on anchor 1
        [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]],
    ])
    valid = torch.tensor([[True, False], [False, False]])
    matches = Impl()(gt, valid, anchors)
    assert matches.tolist() == [[0, BACKGROUND], [BACKGROUND, BACKGROUND]]
    empty = Impl()(torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool), anchors)
    assert empty.tolist() == [[BACKGROUND] * 2] * 2


def _random_boxes(n, g, scale=300.0):
    xy = torch.rand(n, 2, generator=g) * scale
    return torch.cat([xy, xy + 8 + torch.rand(n, 2, generator=g) * 80], dim=1)


def test_equals_torchvision_matcher_per_image_and_chunking_changes_nothing(Impl):
    g = torch.Generator().manual_seed(1)
    anchors = _random_boxes(3000, g)
    counts = [7, 0, 30]
    m = max(counts)
    gt = torch.zeros(3, m, 4)
    valid = torch.zeros(3, m, dtype=torch.bool)
    for i, c in enumerate(counts):
        gt[i, :c] = _random_boxes(c, g)
        valid[i, :c] = True
    ours = Impl()(gt, valid, anchors)
    with fast_matcher.settings(max_chunk_elements=3 * m * 128):
        chunked = Impl()(gt, valid, anchors)
    assert torch.equal(ours, chunked)
    tv = TVMatcher(0.5, 0.4, allow_low_quality_matches=True)
    for i, c in enumerate(counts):
        expected = tv(box_iou(gt[i, :c], anchors)) if c else torch.full((3000,), BACKGROUND)
        assert torch.equal(ours[i], expected), i
    assert (ours >= 0).any() and (ours == IGNORE).any()


def _pyramid_anchors(image_size=256):
    """torchvision's RetinaNet anchors of one image_size x image_size image (P3-P7)."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    sizes = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in (32, 64, 128, 256, 512))
    generator = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
    images = ImageList(torch.zeros(1, 3, image_size, image_size), [(image_size, image_size)])
    features = [torch.zeros(1, 1, image_size // s, image_size // s) for s in (8, 16, 32, 64, 128)]
    return generator(images, features)[0]


def _culled(matcher, *args):
    with fast_matcher.settings(cull=True):
        return matcher(*args)


def _dense(matcher, *args):
    with fast_matcher.settings(cull=False):
        return matcher(*args)


def test_culled_iou_equals_torchvision_matcher_with_many_boxes_ties_and_edge_cases():
    g = torch.Generator().manual_seed(3)
    anchors = _pyramid_anchors(256)  # 12,276 anchors in 4 size octaves
    n, m = 4, 120
    xy = torch.rand(n, m, 2, generator=g) * 240
    gt = torch.cat([xy, xy + 4 + torch.rand(n, m, 2, generator=g) * 120], dim=-1)
    gt[0, 5] = gt[0, 2]  # a duplicate box: ties between boxes go to the lower index
    gt[0, 7] = anchors[1000]  # a box equal to an anchor, and one equal to another anchor twice
    gt[0, 8] = anchors[2000]
    gt[0, 9] = anchors[2000]
    gt[1, 3] = torch.tensor([50.0, 50.0, 50.0, 80.0])  # zero width
    gt[1, 4] = torch.tensor([5000.0, 5000.0, 5010.0, 5010.0])  # overlaps no anchor
    gt[1, 6] = torch.tensor([100.0, 100.0, 102.0, 101.0])  # tiny: only a low-quality match
    valid = torch.ones(n, m, dtype=torch.bool)
    valid[2, 40:] = False  # padding
    valid[3] = False  # an image without boxes in a batch with boxes
    gt[2, 40:] = anchors[:80]  # padding that sits on anchors never matches

    tv = TVMatcher(0.5, 0.4, allow_low_quality_matches=True)
    culled = _culled(Matcher(), gt, valid, anchors)
    assert torch.equal(culled, _dense(Matcher(), gt, valid, anchors))
    assert torch.equal(culled, Matcher(implementation="reference")(gt, valid, anchors))
    for i in range(n):
        c = int(valid[i].sum())
        iou = box_iou(gt[i, :c], anchors)
        # Our one difference from torchvision: a box that overlaps no anchor (best IoU 0) claims
        # nothing, so it is left out of the reference (torchvision's low-quality rule would hand
        # it every anchor: they all tie at IoU 0).
        kept = torch.nonzero(iou.amax(dim=1) > 0).squeeze(1)
        expected = torch.full((len(anchors),), BACKGROUND)
        if c:
            expected = tv(iou[kept])
            expected = torch.where(expected >= 0, kept[expected.clamp(min=0)], expected)
        assert torch.equal(culled[i], expected), i
    assert culled[0, 1000] == 7 and culled[0, 2000] == 8  # exact anchor: IoU 1; the tie to the lower index
    tiny_best = box_iou(gt[1, 6:7], anchors)[0].argmax()  # IoU 0.002: only the low-quality rule matches it
    assert culled[1, tiny_best] >= 0
    assert not (culled[1] == 4).any() and not (culled[1] == 3).any()

    # fg_iou = bg_iou = 0: every anchor is foreground, even those that overlap nothing
    # (matched to the first valid box, as the dense max over all-zero IoUs does).
    loose = dict(fg_iou=0.0, bg_iou=0.0, allow_low_quality_matches=False)
    assert torch.equal(_culled(Matcher(**loose), gt, valid, anchors), _dense(Matcher(**loose), gt, valid, anchors))
    assert torch.equal(_culled(Matcher(**loose), gt, valid, anchors),
                       Matcher(implementation="reference", **loose)(gt, valid, anchors))
    strict = dict(allow_low_quality_matches=False)
    assert torch.equal(_culled(Matcher(**strict), gt, valid, anchors), _dense(Matcher(**strict), gt, valid, anchors))
    assert torch.equal(_culled(Matcher(**strict), gt, valid, anchors),
                       Matcher(implementation="reference", **strict)(gt, valid, anchors))


def test_culled_path_with_no_box_near_any_anchor():
    anchors = _pyramid_anchors(128)
    gt = torch.tensor([[[9000.0, 9000.0, 9100.0, 9100.0]] * 20])
    matches = _culled(Matcher(), gt, torch.ones(1, 20, dtype=torch.bool), anchors)
    assert (matches == BACKGROUND).all()
    assert torch.equal(matches, Matcher(implementation="reference")(gt, torch.ones(1, 20, dtype=torch.bool), anchors))
