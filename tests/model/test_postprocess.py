import functools

import pytest
import torch
from torchvision.models.detection import retinanet_resnet50_fpn
from torchvision.ops import batched_nms

from detector.model import IMPLEMENTATIONS, PostProcessor
from detector.model.fast_postprocess import class_wise_nms, top_pairs


@pytest.fixture(params=IMPLEMENTATIONS)
def Impl(request):
    """PostProcessor running the rule (per image, batched_nms) or the fast path: each test runs both."""
    return functools.partial(PostProcessor, implementation=request.param)


def _logit(p):
    return torch.log(torch.tensor(p) / (1 - torch.tensor(p)))


def test_threshold_classwise_nms_and_cap(Impl):
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 10.0]])
    logits = torch.full((1, 4, 2), -10.0)
    logits[0, 0, 0] = _logit(0.9)   # kept
    logits[0, 1, 0] = _logit(0.8)   # same class, IoU 0.82 with anchor 0 -> suppressed
    logits[0, 1, 1] = _logit(0.7)   # other class on the same box -> kept
    logits[0, 2, 1] = _logit(0.04)  # below 0.05 -> dropped
    logits[0, 3, 1] = _logit(0.6)   # class 1, IoU 0.82 with anchor 1's class-1 box -> suppressed
    post = Impl(score_thresh=0.05, nms_thresh=0.5, detections_per_img=100)
    det = post(logits, torch.zeros(1, 4, 4), anchors, [4], torch.tensor([[100, 100]]))[0]
    assert det["labels"].tolist() == [0, 1]
    torch.testing.assert_close(det["scores"], torch.tensor([0.9, 0.7]))
    torch.testing.assert_close(det["boxes"], anchors[[0, 1]])
    capped = Impl(detections_per_img=1)(logits, torch.zeros(1, 4, 4), anchors, [4], torch.tensor([[100, 100]]))[0]
    assert capped["scores"].tolist() == [det["scores"][0].item()]


def test_topk_is_per_level_and_boxes_are_clipped_per_image(Impl):
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0], [40.0, 0.0, 50.0, 10.0], [60.0, 0.0, 200.0, 100.0]])
    logits = torch.full((2, 4, 1), 3.0)
    logits[:, 1] = 4.0
    post = Impl(topk_candidates=1, nms_thresh=0.5)
    dets = post(logits, torch.zeros(2, 4, 4), anchors, [3, 1], torch.tensor([[100, 100], [50, 80]]))
    for det, (h, w) in zip(dets, [(100, 100), (50, 80)]):
        assert len(det["scores"]) == 2  # one from each level
        assert det["boxes"][:, 0::2].max() <= w and det["boxes"][:, 1::2].max() <= h
    torch.testing.assert_close(dets[1]["boxes"][1], torch.tensor([60.0, 0.0, 80.0, 50.0]))
    torch.testing.assert_close(dets[0]["boxes"][0], torch.tensor([20.0, 0.0, 30.0, 10.0]))


def test_empty_when_nothing_passes(Impl):
    dets = Impl()(torch.full((3, 5, 2), -9.0), torch.zeros(3, 5, 4), torch.rand(5, 4), [5], torch.tensor([[9, 9]] * 3))
    assert [len(d["boxes"]) for d in dets] == [0, 0, 0]


def _torchvision(logits, deltas, anchors, per_level, sizes, post):
    """torchvision's own RetinaNet.postprocess_detections (threshold, top-k per level, decode, clip,
    batched_nms, cap) with the same settings: the reference, not a copy of ours."""
    tv = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=logits.shape[2],
                                score_thresh=post.score_thresh, nms_thresh=post.nms_thresh,
                                detections_per_img=post.detections_per_img, topk_candidates=post.topk_candidates)
    head = {"cls_logits": list(logits.split(per_level, dim=1)), "bbox_regression": list(deltas.split(per_level, dim=1))}
    level_anchors = list(anchors.split(per_level))
    out = tv.postprocess_detections(head, [level_anchors] * len(logits), [tuple(s) for s in sizes.tolist()])
    return [{"boxes": o["boxes"], "scores": o["scores"], "labels": o["labels"]} for o in out]


def test_dense_clustered_candidates_equal_plain_nms_over_all_of_them(Impl):
    """Clusters of overlapping anchors: NMS over the best 4 x 40 candidates keeps too few, so the
    early exit needs several rounds, and later rounds take the grouped CPU path (> 1,000 boxes)."""
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(8, 2, generator=g) * 400
    centres = centres.repeat_interleave(250, dim=0) + torch.randn(2000, 2, generator=g) * 2
    sizes = 24 + torch.rand(2000, 2, generator=g) * 2
    anchors = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)  # (2000, 4)
    per_level = [1500, 500]
    logits = torch.randn(3, 2000, 3, generator=g) * 1.5 - 1.0  # most of the 6,000 scores pass 0.05
    deltas = torch.randn(3, 2000, 4, generator=g) * 0.02
    image_sizes = torch.tensor([[430, 430], [420, 430], [430, 425]])
    post = Impl(detections_per_img=40, topk_candidates=1000)
    got = post(logits, deltas, anchors, per_level, image_sizes)
    want = _torchvision(logits, deltas, anchors, per_level, image_sizes, post)
    for g_det, w_det in zip(got, want):
        assert len(w_det["scores"]) == 40
        torch.testing.assert_close(g_det["scores"], w_det["scores"], rtol=0, atol=0)
        torch.testing.assert_close(g_det["boxes"], w_det["boxes"], rtol=0, atol=1e-4)
        assert torch.equal(g_det["labels"], w_det["labels"])


def test_class_wise_nms_keeps_what_batched_nms_keeps():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(3000, 2, generator=g) * 300
    boxes = torch.cat([xy, xy + 10 + torch.rand(3000, 2, generator=g) * 40], dim=1)
    scores = torch.rand(3000, generator=g)
    groups = torch.randint(0, 40, (3000,), generator=g)
    assert torch.equal(class_wise_nms(boxes, scores, groups, 0.5), batched_nms(boxes, scores, groups, 0.5))
    few = slice(0, 500)  # below the grouped path's threshold: torchvision's own
    assert torch.equal(class_wise_nms(boxes[few], scores[few], groups[few], 0.5),
                       batched_nms(boxes[few], scores[few], groups[few], 0.5))


@pytest.mark.parametrize("r, k, top", [(500, 7, 100), (60, 91, 1000), (30, 5, 150), (40, 3, 40)])
def test_top_pairs_equals_topk_over_every_anchor_and_class(r, k, top):
    g = torch.Generator().manual_seed(r + k)
    logits = torch.randn(3, r, k, generator=g)
    logits[0, 7] += 10.0  # image 0: one anchor holds the best k pairs
    logits[1, :, 2] += 5.0  # image 1: one class is best everywhere, so the best pairs span many anchors
    values, idx = top_pairs(logits, top)
    ref_values, ref_idx = logits.flatten(1).topk(top, dim=1)
    assert torch.equal(values, ref_values)
    assert torch.equal(idx.sort(dim=1).values, ref_idx.sort(dim=1).values)
    assert torch.equal(torch.gather(logits.flatten(1), 1, idx), values)
