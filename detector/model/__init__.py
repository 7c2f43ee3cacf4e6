"""The RetinaNet model: plain PyTorch, no Lightning."""

from .anchors import AnchorGenerator
from .box_coder import BoxCoder
from .config import RetinaNetConfig
from .losses import ImbalanceStats, NonFiniteLossError, RetinaNetLoss, sigmoid_focal_loss
from .matcher import BACKGROUND, IGNORE, Matcher
from .postprocess import PostProcessor
from .retinanet import HeadOutputs, RetinaNet, build_retinanet, rescale_boxes

__all__ = [
    "AnchorGenerator", "BACKGROUND", "BoxCoder", "HeadOutputs", "IGNORE", "ImbalanceStats", "Matcher",
    "NonFiniteLossError", "PostProcessor", "RetinaNet", "RetinaNetConfig", "RetinaNetLoss", "build_retinanet",
    "rescale_boxes", "sigmoid_focal_loss",
]
