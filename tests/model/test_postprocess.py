import torch

from detector.model import PostProcessor


def _logit(p):
    return torch.log(torch.tensor(p) / (1 - torch.tensor(p)))


def test_threshold_classwise_nms_and_cap():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 10.0]])
    logits = torch.full((1, 4, 2), -10.0)
    logits[0, 0, 0] = _logit(0.9)   # kept
    logits[0, 1, 0] = _logit(0.8)   # same class, IoU 0.82 with anchor 0 -> suppressed
    logits[0, 1, 1] = _logit(0.7)   # other class on the same box -> kept
    logits[0, 2, 1] = _logit(0.04)  # below 0.05 -> dropped
    logits[0, 3, 1] = _logit(0.6)   # class 1, IoU 0.82 with anchor 1's class-1 box -> suppressed
    post = PostProcessor(score_thresh=0.05, nms_thresh=0.5, detections_per_img=100)
    det = post(logits, torch.zeros(1, 4, 4), anchors, [4], torch.tensor([[100, 100]]))[0]
    assert det["labels"].tolist() == [0, 1]
    torch.testing.assert_close(det["scores"], torch.tensor([0.9, 0.7]))
    torch.testing.assert_close(det["boxes"], anchors[[0, 1]])
    capped = PostProcessor(detections_per_img=1)(logits, torch.zeros(1, 4, 4), anchors, [4], torch.tensor([[100, 100]]))[0]
    assert capped["scores"].tolist() == [det["scores"][0].item()]


def test_topk_is_per_level_and_boxes_are_clipped_per_image():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0], [40.0, 0.0, 50.0, 10.0], [60.0, 0.0, 200.0, 100.0]])
    logits = torch.full((2, 4, 1), 3.0)
    logits[:, 1] = 4.0
    post = PostProcessor(topk_candidates=1, nms_thresh=0.5)
    dets = post(logits, torch.zeros(2, 4, 4), anchors, [3, 1], torch.tensor([[100, 100], [50, 80]]))
    for det, (h, w) in zip(dets, [(100, 100), (50, 80)]):
        assert len(det["scores"]) == 2  # one from each level
        assert det["boxes"][:, 0::2].max() <= w and det["boxes"][:, 1::2].max() <= h
    torch.testing.assert_close(dets[1]["boxes"][1], torch.tensor([60.0, 0.0, 80.0, 50.0]))
    torch.testing.assert_close(dets[0]["boxes"][0], torch.tensor([20.0, 0.0, 30.0, 10.0]))


def test_empty_when_nothing_passes():
    dets = PostProcessor()(torch.full((3, 5, 2), -9.0), torch.zeros(3, 5, 4), torch.rand(5, 4), [5], torch.tensor([[9, 9]] * 3))
    assert [len(d["boxes"]) for d in dets] == [0, 0, 0]
