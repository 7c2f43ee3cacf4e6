"""ResNet + FPN backbone producing P3-P7.

Shape symbols: N images, C FPN channels; Pi has stride 2^i (P3: 8 ... P7: 128).

The ResNet (torchvision) gives C3-C5 (layer2-layer4); torchvision's FeaturePyramidNetwork
builds P3-P5 top-down, and two stride-2 convs add P6 (from P5 or from C5) and P7 (from ReLU(P6)).
Module names match torchvision's BackboneWithFPN ("body", "fpn"), so torchvision RetinaNet
checkpoints load unchanged.
"""

from __future__ import annotations

from urllib.error import URLError

from torch import Tensor, nn
from torchvision.models import get_model, get_model_weights
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
#: Channels of C3, C4, C5 for each ResNet.
_C345 = {"resnet18": (128, 256, 512), "resnet34": (128, 256, 512), "resnet50": (512, 1024, 2048),
         "resnet101": (512, 1024, 2048)}
#: Stages in the order in which `frozen_stages` freezes them.
_STAGES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))


class BackboneError(RuntimeError):
    """The backbone could not be built (unknown name, weights that cannot be fetched)."""


class _P6P7(LastLevelP6P7):
    """torchvision's P6/P7 block, with the P5-or-C5 choice made explicit instead of by channel count."""

    def __init__(self, in_channels: int, out_channels: int, from_p5: bool) -> None:
        super().__init__(in_channels, out_channels)
        self.use_P5 = from_p5


def _load_resnet(name: str, weights: str | None, norm_layer) -> nn.Module:
    if name not in RESNETS:
        raise BackboneError(f"unknown backbone {name!r}; choose one of {', '.join(RESNETS)}")
    if weights is not None:
        try:
            weights = get_model_weights(name)[weights]
        except KeyError:
            names = ", ".join(w.name for w in get_model_weights(name))
            raise BackboneError(f"unknown weights {weights!r} for {name}; choose one of {names} or None") from None
    try:
        return get_model(name, weights=weights, norm_layer=norm_layer)
    except (URLError, OSError) as err:
        raise BackboneError(
            f"could not fetch the {name} {weights} weights ({err}); without internet use "
            "backbone_weights=None, or put the file in the torch hub cache ($TORCH_HOME/hub/checkpoints)"
        ) from None


class ResNetFPN(nn.Module):
    """ResNet-FPN returning [P3, P4, P5, P6, P7], each (N, C, Hi, Wi).

    Args:
        name: resnet18 | resnet34 | resnet50 | resnet101.
        weights: torchvision weights name (e.g. "IMAGENET1K_V1"), or None for random init.
        out_channels: FPN channels C.
        p6_from: "p5" (torchvision v1) or "c5" (the paper, torchvision v2).
        frozen_stages: 0 trains all; 1 freezes the stem; 2 the stem and layer1; ... 5 everything.
        freeze_bn: use FrozenBatchNorm2d (fixed statistics and affine) in the ResNet.
    """

    def __init__(
        self, name: str = "resnet50", *, weights: str | None = None, out_channels: int = 256,
        p6_from: str = "p5", frozen_stages: int = 0, freeze_bn: bool = False,
    ) -> None:
        super().__init__()
        if p6_from not in ("p5", "c5"):
            raise BackboneError(f"p6_from must be 'p5' or 'c5', got {p6_from!r}")
        if not 0 <= frozen_stages <= len(_STAGES):
            raise BackboneError(f"frozen_stages must be in 0..{len(_STAGES)}, got {frozen_stages}")
        resnet = _load_resnet(name, weights, FrozenBatchNorm2d if freeze_bn else nn.BatchNorm2d)
        for stage in _STAGES[:frozen_stages]:
            for module_name in stage:
                getattr(resnet, module_name).requires_grad_(False)
        c3, c4, c5 = _C345[name]
        self.body = IntermediateLayerGetter(resnet, return_layers={"layer2": "c3", "layer3": "c4", "layer4": "c5"})
        self.fpn = FeaturePyramidNetwork(
            [c3, c4, c5], out_channels,
            extra_blocks=_P6P7(out_channels if p6_from == "p5" else c5, out_channels, p6_from == "p5"),
        )
        self.out_channels = out_channels

    def forward(self, images: Tensor) -> list[Tensor]:
        """Features [P3, ..., P7] for normalised images (N, 3, H, W)."""
        return list(self.fpn(self.body(images)).values())
