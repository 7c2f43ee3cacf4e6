"""RetinaNet: a plain nn.Module that anyone can use without Lightning.

Shape symbols: N images, R anchors, K classes, M ground-truth boxes per image (padded),
L = 5 levels (P3-P7).

Contract:
- `forward(images)`: padded images (N, 3, H, W) as the pipeline gives them, uint8 in [0, 255] or
  float in [0, 1] (normalised here) -> `HeadOutputs` with cls_logits (N, R, K), box_deltas (N, R, 4),
  anchors (R, 4) XYXY and the anchors per level.
- `loss(outputs, gt_boxes (N, M, 4), gt_labels (N, M), gt_valid (N, M))` -> (dict of loss parts,
  ImbalanceStats): the matcher, then `criterion` (the RetinaNetLoss module). Boxes XYXY in input
  pixels, labels 0..K-1.
- `detect(outputs, image_sizes (N, 2))` -> per image {"boxes", "scores", "labels"} in input pixels.
- `predict(list of (3, H_i, W_i) float tensors in [0, 1])` -> per image {"boxes" (D, 4) XYXY in that
  image's own pixels, "scores" (D,), "labels" (D,)}: resize (min_size/max_size), pad with the mean
  colour, normalise, detect, map back: a torchvision RetinaNet's detections (it normalises before
  resizing, which rounds differently in the last bit, and pads with 0, the mean colour normalised).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .anchors import AnchorGenerator
from .backbone import ResNetFPN
from .box_coder import BoxCoder
from .config import IMPLEMENTATIONS, RetinaNetConfig
from .head import RetinaNetHead
from .losses import ImbalanceStats, RetinaNetLoss
from .matcher import Matcher
from .postprocess import PostProcessor
from .preprocess import normalize, preprocess


class HeadOutputs(NamedTuple):
    cls_logits: Tensor  # (N, R, K)
    box_deltas: Tensor  # (N, R, 4)
    anchors: Tensor  # (R, 4)
    num_anchors_per_level: list[int]


class RetinaNet(nn.Module):
    """Backbone + head + the parts that turn head outputs into losses or detections.

    Build it with `build_retinanet(config)`; the parts are injected here so that each can be
    swapped or tested alone.
    """

    def __init__(
        self, *, config: RetinaNetConfig, backbone: nn.Module, head: nn.Module, anchor_generator: AnchorGenerator,
        matcher: Matcher, criterion: RetinaNetLoss, postprocessor: PostProcessor,
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.head = head
        self.anchor_generator = anchor_generator
        self.matcher = matcher
        self.criterion = criterion
        self.postprocessor = postprocessor
        self.register_buffer("image_mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def features(self, images: Tensor) -> list[Tensor]:
        """FPN features P3..P7, each (N, C, Hi, Wi), of padded images (N, 3, H, W), uint8 in [0, 255]
        or float in [0, 1]: the one place the input is normalised (ImageNet mean and std).

        A model moved to channels_last (model.to(memory_format=torch.channels_last)) gets its
        input in that format too.
        """
        x = normalize(images, self.image_mean, self.image_std)
        if next(self.backbone.parameters()).is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)

    def forward(self, images: Tensor) -> HeadOutputs:
        """Head outputs and anchors for padded images (N, 3, H, W), uint8 in [0, 255] or float in [0, 1]."""
        features = self.features(images)
        cls_logits, box_deltas = self.head(features)
        feature_sizes = [tuple(f.shape[-2:]) for f in features]
        anchors = self.anchor_generator(tuple(images.shape[-2:]), feature_sizes, device=images.device)
        return HeadOutputs(cls_logits, box_deltas, anchors, self.anchor_generator.num_anchors_per_level(feature_sizes))

    def loss(
        self, outputs: HeadOutputs, gt_boxes: Tensor, gt_labels: Tensor, gt_valid: Tensor
    ) -> tuple[dict[str, Tensor], ImbalanceStats]:
        """Loss parts ("loss_cls", "loss_box", "loss") and imbalance statistics: the matcher's matches
        scored by `criterion` (RetinaNetLoss)."""
        matches = self.matcher(gt_boxes, gt_valid, outputs.anchors)  # (N, R)
        return self.criterion(outputs.cls_logits, outputs.box_deltas, outputs.anchors, matches, gt_boxes, gt_labels)

    def detect(self, outputs: HeadOutputs, image_sizes: Tensor) -> list[dict[str, Tensor]]:
        """Detections per image in input pixels, clipped to image_sizes (N, 2) (h, w)."""
        return self.postprocessor(
            outputs.cls_logits, outputs.box_deltas, outputs.anchors, outputs.num_anchors_per_level, image_sizes
        )

    # ----------------------------------------------------------------------------------------
    # Inference on raw images of any size.

    def preprocess(self, images: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Resize and pad a list of (3, H_i, W_i) images in [0, 1] (`preprocess.preprocess`), for `forward`.

        Returns (batch (N, 3, H, W) in [0, 1], padded with the mean colour; image_sizes (N, 2) of the
        resized images). Raises ImageTooThinError for an image whose resized side would be below 1 px.
        """
        if not images:
            raise ValueError("predict needs at least one image")
        for i, image in enumerate(images):
            if image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(f"image {i}: expected a (3, H, W) tensor, got shape {tuple(image.shape)}")
            if not image.is_floating_point():
                raise ValueError(f"image {i}: expected a float tensor in [0, 1], got {image.dtype}")
        c = self.config
        return preprocess(images, c.min_size, c.max_size, c.size_divisible, fill=c.image_mean)

    @torch.no_grad()
    def predict(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Detections in each image's own pixels for a list of (3, H_i, W_i) float images in [0, 1]."""
        was_training = self.training
        self.eval()
        try:
            device = self.image_mean.device
            images = [img.to(device) for img in images]
            batch, sizes = self.preprocess(images)
            detections = self.detect(self(batch), sizes)
        finally:
            self.train(was_training)
        for det, img, size in zip(detections, images, sizes.tolist()):
            det["boxes"] = rescale_boxes(det["boxes"], from_size=size, to_size=img.shape[-2:])
        return detections


def rescale_boxes(boxes: Tensor, from_size, to_size) -> Tensor:
    """Boxes (..., 4) XYXY from an image of size from_size (h, w) to one of size to_size (h, w).

    Sizes are ints, SymInts or 0-dim tensors (`preprocess.dims`); the ratios are float32 in every case.
    """
    one = boxes.new_ones((), dtype=torch.float32)
    ratio_h, ratio_w = (one * to_size[0]) / (one * from_size[0]), (one * to_size[1]) / (one * from_size[1])
    return boxes * torch.stack([ratio_w, ratio_h, ratio_w, ratio_h])


def build_retinanet(config: RetinaNetConfig | None = None, **overrides) -> RetinaNet:
    """A RetinaNet from a config (and keyword overrides of its fields)."""
    config = config or RetinaNetConfig()
    if overrides:
        config = RetinaNetConfig.from_dict({**config.__dict__, **overrides})
    if not config.num_classes or config.num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {config.num_classes}")
    if config.implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {config.implementation!r}")
    box_coder = BoxCoder()
    anchor_generator = AnchorGenerator(
        config.anchor_sizes, config.anchor_scales, config.anchor_ratios, config.torchvision_anchors
    )
    backbone = ResNetFPN(
        config.backbone, weights=config.backbone_weights, out_channels=config.fpn_channels, p6_from=config.p6_from,
        frozen_stages=config.frozen_stages, freeze_bn=config.freeze_bn,
    )
    head = RetinaNetHead(
        config.fpn_channels, anchor_generator.num_anchors_per_location, config.num_classes,
        num_convs=config.head_convs, group_norm=config.head_group_norm, prior_prob=config.prior_prob,
    )
    criterion = RetinaNetLoss(
        config.num_classes, cls_loss=config.cls_loss, alpha=config.alpha, gamma=config.gamma,
        ohem_neg_pos_ratio=config.ohem_neg_pos_ratio, box_loss=config.box_loss,
        smooth_l1_beta=config.smooth_l1_beta, normalizer_momentum=config.normalizer_momentum, box_coder=box_coder,
        guided_loss_scaling=config.guided_loss_scaling, implementation=config.implementation,
    )
    postprocessor = PostProcessor(
        score_thresh=config.score_thresh, topk_candidates=config.topk_candidates, nms_thresh=config.nms_thresh,
        detections_per_img=config.detections_per_img, box_coder=box_coder, implementation=config.implementation,
    )
    matcher = Matcher(config.fg_iou, config.bg_iou, config.allow_low_quality_matches,
                      implementation=config.implementation)
    return RetinaNet(
        config=config, backbone=backbone, head=head, anchor_generator=anchor_generator, matcher=matcher,
        criterion=criterion, postprocessor=postprocessor,
    )
