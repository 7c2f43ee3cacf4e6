"""RetinaNetConfig: every setting of the model in one flat, readable dataclass.

It is what a YAML config's `model.detector` section spells out, what a checkpoint stores (as a
plain dict, under "detector_config"), and what `build_retinanet` turns into a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

#: Values of `RetinaNetConfig.implementation`.
IMPLEMENTATIONS = ("fast", "reference")
#: Keys that older configs and checkpoints hold, with the one value they could take (dropped on load).
_REMOVED_KEYS = {"box_weights": [1.0, 1.0, 1.0, 1.0], "box_loss_weight": 1.0, "compile_cls_loss": None}


@dataclass
class RetinaNetConfig:
    num_classes: int | None = 80  # None: taken from the data by the training module

    # Backbone: ResNet-FPN, P3-P7.
    backbone: str = "resnet50"  # resnet18 | resnet34 | resnet50 | resnet101
    backbone_weights: str | None = None  # e.g. "IMAGENET1K_V1" (needs internet once), None = random
    frozen_stages: int = 0  # 0 none, 1 stem, 2 stem + layer1, ... 5 all
    freeze_bn: bool = False
    fpn_channels: int = 256
    p6_from: str = "p5"  # "p5" (torchvision v1) | "c5" (paper)

    # Anchors: sizes per level P3..P7, x scales, x ratios (height / width).
    anchor_sizes: tuple[float, ...] = (32, 64, 128, 256, 512)
    anchor_scales: tuple[float, ...] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    torchvision_anchors: bool = False  # integer sizes + rounded corners, as torchvision

    # Head.
    head_convs: int = 4
    head_group_norm: bool = False
    prior_prob: float | None = 0.01  # None: classification bias 0 (for the loss study)

    # Matching.
    fg_iou: float = 0.5
    bg_iou: float = 0.4
    allow_low_quality_matches: bool = True

    # Losses.
    cls_loss: str = "focal"  # focal | ce | ohem
    alpha: float | None = 0.25
    gamma: float = 2.0
    ohem_neg_pos_ratio: float = 3.0
    box_loss: str = "smooth_l1"  # smooth_l1 | l1 | giou
    smooth_l1_beta: float = 0.1
    normalizer_momentum: float | None = None  # None: this batch's positives; 0.9: EMA
    # Sampling-Free's "guided loss scaling" (Chen et al. 2019): loss_cls rescaled to loss_box's value.
    guided_loss_scaling: bool = False

    # Inference.
    score_thresh: float = 0.05
    topk_candidates: int = 1000
    nms_thresh: float = 0.5
    detections_per_img: int = 100

    # Input: normalisation, and the resize (`model/preprocess.py`). A training config sets the size
    # once, as data.min_size / data.max_size; the training module copies it here (a value given
    # here is overwritten), so that a checkpoint carries it. Padding to a multiple of the largest
    # stride keeps anchor strides nominal.
    min_size: int = 800
    max_size: int = 1333
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    size_divisible: int = 128

    # The three hot spots (classification loss, matcher, post-processing): "reference" runs the
    # rule as written in losses.py, matcher.py and postprocess.py; "fast" the equal, faster
    # versions in fast_focal.py, fast_matcher.py and fast_postprocess.py.
    implementation: str = "fast"  # fast | reference

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "RetinaNetConfig":
        data = without_removed_keys(data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown RetinaNetConfig keys: {', '.join(unknown)}")
        tuples = {f.name for f in fields(cls) if "tuple" in str(f.type)}
        return cls(**{k: tuple(v) if k in tuples and v is not None else v for k, v in data.items()})


def _same(value, removed) -> bool:
    return list(value) == removed if isinstance(value, (list, tuple)) else value == removed


def without_removed_keys(data: dict) -> dict:
    """A config dict without the keys the project removed, where they hold their only value.

    Configs and checkpoints written before the removal still load; any other value of such a key
    stays, and is refused as unknown.
    """
    return {k: v for k, v in data.items() if not (k in _REMOVED_KEYS and _same(v, _REMOVED_KEYS[k]))}
