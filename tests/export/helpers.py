"""A tiny detector with many detections, test images, and a tie-aware comparison of detections."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from detector import build_retinanet

BOX_TOL = 0.5  # pixels
SCORE_TOL = 1e-3


def tiny_detector(num_classes: int = 5, **overrides):
    """resnet18, FPN 64, 256-400 px, with head weights that give many detections of spread scores.

    Random init leaves the head's logits nearly flat (all scores about equal, ties everywhere):
    He-initialised head convs and scaled predictors spread them the way a trained model does.
    """
    torch.manual_seed(0)
    settings = dict(num_classes=num_classes, backbone="resnet18", fpn_channels=64, min_size=256, max_size=400)
    model = build_retinanet(**{**settings, **overrides}).eval()
    with torch.no_grad():
        for conv in model.head.modules():
            if isinstance(conv, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(conv.weight)
        batch, _ = model.preprocess([torch.rand(3, 200, 260, generator=torch.Generator().manual_seed(1))])
        out = model(batch)
        model.head.classification_head.cls_logits.weight.div_(out.cls_logits.std())
        model.head.classification_head.cls_logits.bias.fill_(-4.0)
        model.head.regression_head.bbox_reg.weight.mul_(0.3 / out.box_deltas.std())
    return model


def load_float_image(path) -> torch.Tensor:
    """(3, H, W) float in [0, 1] from an image file, as scripts/predict.py reads it."""
    array = np.asarray(Image.open(path).convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)


def assert_same_detections(got: dict, expected: dict, detections_per_img: int) -> None:
    """Same detections: labels equal, boxes within BOX_TOL px, scores within SCORE_TOL, as sets.

    Each expected detection is paired with an unused one of `got` (same label, nearest box); the
    order among near-equal scores is free. When a list is full (detections_per_img), detections
    that tie with its lowest score may differ: which of equal scores makes the cut is open.
    """
    e_boxes, e_scores, e_labels = (expected[k].detach().cpu() for k in ("boxes", "scores", "labels"))
    g_boxes, g_scores, g_labels = (torch.as_tensor(got[k]).cpu() for k in ("boxes", "scores", "labels"))
    assert g_boxes.shape[1:] == (4,) and g_labels.dtype == torch.int64
    assert len(e_scores) > 0, "the comparison needs detections"
    used = torch.zeros(len(g_scores), dtype=torch.bool)
    unmatched = []
    for i in range(len(e_scores)):
        dist = (g_boxes - e_boxes[i]).abs().amax(dim=1)
        ok = (~used) & (g_labels == e_labels[i]) & ((g_scores - e_scores[i]).abs() <= SCORE_TOL) & (dist <= BOX_TOL)
        if ok.any():
            used[torch.where(ok, dist, torch.inf).argmin()] = True
        else:
            unmatched.append(float(e_scores[i]))
    extra = g_scores[~used].tolist()
    for side, scores, leftover in (("expected", e_scores, unmatched), ("got", g_scores, extra)):
        if not leftover:
            continue
        full = len(scores) == detections_per_img
        cut = float(scores.min())
        assert full and all(s - cut <= SCORE_TOL for s in leftover), (
            f"{len(leftover)} {side} detections unmatched (scores {leftover[:5]}), not ties at the cut {cut:.4f}")
