"""Classification and box subnets, shared across the FPN levels.

Shape symbols: N images, C channels, A anchors per location, K classes, Hi x Wi the size of
level i, R = sum_i Hi * Wi * A.

Each subnet is `num_convs` x (conv3x3 C->C [+ GroupNorm] + ReLU) followed by a conv3x3 predictor:
K * A sigmoid logits (there is no background class) or 4 * A class-agnostic box deltas. Weights
are Gaussian(0, 0.01), biases 0, except the classification bias, which starts at
-log((1 - pi) / pi) so that every anchor begins with foreground probability pi (0.01): without it
the 99.9% background anchors swamp the first steps of training (Lin et al. 2017, section 4.1).

Module names match torchvision's RetinaNetHead, so its state dicts load unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation


def _subnet(channels: int, num_convs: int, group_norm: bool) -> nn.Sequential:
    norm = (lambda c: nn.GroupNorm(32 if c % 32 == 0 else 8, c)) if group_norm else None
    return nn.Sequential(*(Conv2dNormActivation(channels, channels, norm_layer=norm) for _ in range(num_convs)))


def _flatten(x: Tensor, last: int) -> Tensor:
    """(N, A * last, Hi, Wi) -> (N, Hi * Wi * A, last): position-major, then anchor."""
    n, _, h, w = x.shape
    return x.view(n, -1, last, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, last)


class ClassificationHead(nn.Module):
    def __init__(
        self, channels: int, num_anchors: int, num_classes: int, num_convs: int = 4,
        group_norm: bool = False, prior_prob: float | None = 0.01,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv = _subnet(channels, num_convs, group_norm)
        self.cls_logits = nn.Conv2d(channels, num_anchors * num_classes, kernel_size=3, padding=1)
        _init_gaussian(self)
        if prior_prob is not None:
            if not 0.0 < prior_prob < 1.0:
                raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob}")
            nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: list[Tensor]) -> Tensor:
        """Logits (N, R, K) for the levels' features [(N, C, Hi, Wi), ...]."""
        return torch.cat([_flatten(self.cls_logits(self.conv(f)), self.num_classes) for f in features], dim=1)


class RegressionHead(nn.Module):
    def __init__(self, channels: int, num_anchors: int, num_convs: int = 4, group_norm: bool = False) -> None:
        super().__init__()
        self.conv = _subnet(channels, num_convs, group_norm)
        self.bbox_reg = nn.Conv2d(channels, num_anchors * 4, kernel_size=3, padding=1)
        _init_gaussian(self)

    def forward(self, features: list[Tensor]) -> Tensor:
        """Box deltas (N, R, 4) for the levels' features [(N, C, Hi, Wi), ...]."""
        return torch.cat([_flatten(self.bbox_reg(self.conv(f)), 4) for f in features], dim=1)


class RetinaNetHead(nn.Module):
    """Both subnets. Args: see the module docstring; prior_prob=None leaves the bias at 0."""

    def __init__(
        self, channels: int, num_anchors: int, num_classes: int, *, num_convs: int = 4,
        group_norm: bool = False, prior_prob: float | None = 0.01,
    ) -> None:
        super().__init__()
        self.classification_head = ClassificationHead(
            channels, num_anchors, num_classes, num_convs, group_norm, prior_prob
        )
        self.regression_head = RegressionHead(channels, num_anchors, num_convs, group_norm)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """(cls_logits (N, R, K), box_deltas (N, R, 4))."""
        return self.classification_head(features), self.regression_head(features)


def _init_gaussian(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, std=0.01)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
