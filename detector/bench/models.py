"""The two contenders with the same weights and config, and the inputs they share.

torchvision's `retinanet_resnet50_fpn(weights=None, weights_backbone=None)` (random weights,
trainable BatchNorm, every stage trainable) and ours built from its state dict with
`from_torchvision(..., freeze_bn=False, frozen_stages=0)`, which the reference tests show to give
the same detections and losses.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from ..interop import from_torchvision
from ..model import RetinaNet


def torchvision_retinanet(num_classes: int, image_size: int, seed: int = 0, *, backbone: str = "resnet50",
                          fpn_channels: int = 256):
    """torchvision's RetinaNet (R50-FPN unless told otherwise) whose own resize leaves square
    `image_size` images as they are; random weights, trainable BatchNorm, every stage trainable.

    Another ResNet or FPN width (the smoke test's tiny model) is assembled from torchvision's own
    parts the way retinanet_resnet50_fpn assembles its R50-FPN.
    """
    from torchvision.models import get_model
    from torchvision.models.detection import RetinaNet, retinanet_resnet50_fpn
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    torch.manual_seed(seed)
    if backbone == "resnet50" and fpn_channels == 256:
        return retinanet_resnet50_fpn(
            weights=None, weights_backbone=None, num_classes=num_classes, min_size=image_size, max_size=image_size
        )
    resnet = get_model(backbone, weights=None)
    c3 = resnet.inplanes // 4  # C3..C5 channels: 128, 256, 512 (ResNet-18/34) or 512, 1024, 2048
    body = BackboneWithFPN(resnet, {"layer2": "0", "layer3": "1", "layer4": "2"}, [c3, 2 * c3, 4 * c3],
                           fpn_channels, extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels))
    return RetinaNet(body, num_classes, min_size=image_size, max_size=image_size)


def ours_from(tv_model, *, channels_last: bool = False, backbone: str = "resnet50") -> RetinaNet:
    """Ours with tv_model's weights and behaviour (trainable BatchNorm, nothing frozen, as tv_model)."""
    model = from_torchvision(copy.deepcopy(tv_model.state_dict()), freeze_bn=False, frozen_stages=0,
                             backbone=backbone)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def random_boxes(n: int, m: int, size: int, generator: torch.Generator, *, num_classes: int,
                 min_side: float = 8.0) -> tuple[Tensor, Tensor]:
    """(N, M, 4) XYXY boxes inside a size x size image and (N, M) labels in 1..K-1.

    Labels start at 1 because torchvision's COCO convention keeps 0 for the background; both
    models treat every label the same.
    """
    xy = torch.rand(n, m, 2, generator=generator) * (size - min_side)
    wh = min_side + torch.rand(n, m, 2, generator=generator) * size * 0.4
    boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor(float(size)))], dim=-1)
    labels = torch.randint(1, num_classes, (n, m), generator=generator)
    return boxes, labels


def feature_sizes(image_size: int) -> list[tuple[int, int]]:
    """(Hi, Wi) of P3..P7 for a square image whose side is a multiple of 128."""
    return [(image_size // s, image_size // s) for s in (8, 16, 32, 64, 128)]


def sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    """The paper's optimiser with a learning rate small enough that random weights stay finite."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=1e-5, momentum=0.9, weight_decay=1e-4)
