"""Interoperability with torchvision's RetinaNet (retinanet_resnet50_fpn, v1 and v2).

Our module names follow torchvision's, so its state dict loads as is; what has to be carried over
are the settings that make the model behave the same: its anchors (integer sizes, rounded
corners), its resize (800/1333) and padding (32), its class count (91: COCO category ids used
directly as labels), frozen BatchNorm, at most 300 detections, L1 box loss (v1) or GIoU with
GroupNorm heads and P6 from C5 (v2).
"""

from __future__ import annotations

import re

from .checkpoint import load_torch_file
from .model import RetinaNet, RetinaNetConfig, build_retinanet

_OLD_HEAD_CONV = re.compile(r"^(head\.(?:classification|regression)_head\.conv\.\d+)\.(weight|bias)$")


def _upgrade_old_keys(state_dict: dict) -> dict:
    """Pre-0.13 torchvision files name head convs conv.N.weight; newer ones conv.N.0.weight."""
    return {_OLD_HEAD_CONV.sub(r"\1.0.\2", k): v for k, v in state_dict.items()}


def torchvision_config(state_dict: dict) -> RetinaNetConfig:
    """The RetinaNetConfig under which our model behaves as torchvision's with these weights."""
    state_dict = _upgrade_old_keys(state_dict)
    try:
        cls_weight = state_dict["head.classification_head.cls_logits.weight"]
        p6_in = state_dict["backbone.fpn.extra_blocks.p6.weight"].shape[1]
    except KeyError as err:
        raise ValueError(f"not a torchvision retinanet_resnet50_fpn state dict (missing {err})") from None
    num_anchors = state_dict["head.regression_head.bbox_reg.weight"].shape[0] // 4
    v2 = "head.classification_head.conv.0.1.weight" in state_dict  # GroupNorm after the first conv
    return RetinaNetConfig(
        num_classes=cls_weight.shape[0] // num_anchors,
        backbone="resnet50", freeze_bn=True, frozen_stages=2, fpn_channels=cls_weight.shape[1],
        p6_from="c5" if p6_in != cls_weight.shape[1] else "p5",
        anchor_sizes=(32, 64, 128, 256, 512), anchor_scales=(1.0, 2 ** (1 / 3), 2 ** (2 / 3)),
        anchor_ratios=(0.5, 1.0, 2.0), torchvision_anchors=True,
        head_convs=4, head_group_norm=v2, prior_prob=0.01,
        fg_iou=0.5, bg_iou=0.4, allow_low_quality_matches=True,
        cls_loss="focal", alpha=0.25, gamma=2.0, box_loss="giou" if v2 else "l1",
        score_thresh=0.05, topk_candidates=1000, nms_thresh=0.5, detections_per_img=300,
        min_size=800, max_size=1333, size_divisible=32,
    )


def from_torchvision(state_dict: dict, **overrides) -> RetinaNet:
    """Our RetinaNet with torchvision's weights and behaviour (overrides change config fields)."""
    state_dict = _upgrade_old_keys(state_dict)
    config = torchvision_config(state_dict)
    model = build_retinanet(config, **overrides)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked") and not k.startswith("criterion.")]
    if missing or unexpected:
        raise ValueError(f"state dict does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def torchvision_class_names(num_classes: int) -> list[str] | None:
    """The names of torchvision's COCO labels (label = category id; "__background__", "N/A" fill the
    gaps), from its weights' metadata (no download); None for another class count."""
    from torchvision.models.detection import RetinaNet_ResNet50_FPN_Weights

    names = list(RetinaNet_ResNet50_FPN_Weights.COCO_V1.meta["categories"])
    return names if len(names) == num_classes else None


def load_torchvision_file(path) -> dict:
    """A torchvision state dict from a .pth file (a bare state dict or {"model": state_dict})."""
    state = load_torch_file(path, what="torchvision state dict")
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict")
    return state
