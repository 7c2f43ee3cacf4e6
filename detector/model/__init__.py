"""The RetinaNet model: plain PyTorch, no Lightning."""

from .anchors import AnchorGenerator
from .box_coder import BoxCoder
from .config import IMPLEMENTATIONS, RetinaNetConfig
from .losses import (ImbalanceStats, NonFiniteLossError, RetinaNetLoss, classification_loss_per_anchor,
                     easy_loss_per_anchor, guided_loss_scaling, sigmoid_focal_loss)
from .matcher import BACKGROUND, IGNORE, Matcher, match_anchors
from .postprocess import PostProcessor, detect_reference
from .retinanet import HeadOutputs, RetinaNet, build_retinanet, rescale_boxes

__all__ = [
    "AnchorGenerator", "BACKGROUND", "BoxCoder", "HeadOutputs", "IGNORE", "IMPLEMENTATIONS", "ImbalanceStats",
    "Matcher", "NonFiniteLossError", "PostProcessor", "RetinaNet", "RetinaNetConfig", "RetinaNetLoss",
    "build_retinanet", "classification_loss_per_anchor", "detect_reference", "easy_loss_per_anchor",
    "guided_loss_scaling", "match_anchors", "rescale_boxes", "sigmoid_focal_loss",
]
