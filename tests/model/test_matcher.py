import torch
from torchvision.models.detection._utils import Matcher as TVMatcher
from torchvision.ops import box_iou

from detector.model import BACKGROUND, IGNORE, Matcher


def test_hand_built_iou_matrix():
    # anchors of 10x10; IoU with gt [0,0,10,10] is set by the horizontal overlap.
    anchors = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],   # IoU 1.0 -> fg
        [2.0, 0.0, 12.0, 10.0],   # overlap 8: 80/120 = 0.667 -> fg
        [5.0, 0.0, 15.0, 10.0],   # overlap 5: 50/150 = 0.333 -> bg
        [4.0, 0.0, 14.0, 10.0],   # overlap 6: 60/140 = 0.4286 -> ignore
        [50.0, 50.0, 60.0, 60.0], # IoU 0 -> bg
    ])
    gt = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    matches = Matcher(0.5, 0.4, allow_low_quality_matches=False)(gt, torch.tensor([[True]]), anchors)
    assert matches.tolist() == [[0, 0, BACKGROUND, IGNORE, BACKGROUND]]


def test_low_quality_match_rescues_a_small_box():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]])
    gt = torch.tensor([[[0.0, 0.0, 4.0, 4.0]]])  # IoU 0.16 with its best anchor
    valid = torch.tensor([[True]])
    assert Matcher(allow_low_quality_matches=False)(gt, valid, anchors).tolist() == [[BACKGROUND, BACKGROUND]]
    assert Matcher(allow_low_quality_matches=True)(gt, valid, anchors).tolist() == [[0, BACKGROUND]]


def test_padded_batch_with_empty_image_and_padding_never_matches():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]])
    gt = torch.tensor([
        [[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]],  # padding slot sits on anchor 1
        [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]],
    ])
    valid = torch.tensor([[True, False], [False, False]])
    matches = Matcher()(gt, valid, anchors)
    assert matches.tolist() == [[0, BACKGROUND], [BACKGROUND, BACKGROUND]]
    empty = Matcher()(torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool), anchors)
    assert empty.tolist() == [[BACKGROUND] * 2] * 2


def _random_boxes(n, g, scale=300.0):
    xy = torch.rand(n, 2, generator=g) * scale
    return torch.cat([xy, xy + 8 + torch.rand(n, 2, generator=g) * 80], dim=1)


def test_equals_torchvision_matcher_per_image_and_chunking_changes_nothing():
    g = torch.Generator().manual_seed(1)
    anchors = _random_boxes(3000, g)
    counts = [7, 0, 30]
    m = max(counts)
    gt = torch.zeros(3, m, 4)
    valid = torch.zeros(3, m, dtype=torch.bool)
    for i, c in enumerate(counts):
        gt[i, :c] = _random_boxes(c, g)
        valid[i, :c] = True
    ours = Matcher()(gt, valid, anchors)
    chunked = Matcher(max_chunk_elements=3 * m * 128)(gt, valid, anchors)
    assert torch.equal(ours, chunked)
    tv = TVMatcher(0.5, 0.4, allow_low_quality_matches=True)
    for i, c in enumerate(counts):
        expected = tv(box_iou(gt[i, :c], anchors)) if c else torch.full((3000,), BACKGROUND)
        assert torch.equal(ours[i], expected), i
    assert (ours >= 0).any() and (ours == IGNORE).any()
