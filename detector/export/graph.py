"""The whole detector as one traceable module: raw images in, final detections out.

Shape symbols: N images, H x W their (common) size, K classes, D = detections_per_img.

`ExportableDetector(model)(images)` runs what `RetinaNet.predict` runs, with the same functions,
so that `torch.onnx.export` (TorchScript tracing) and `torch.export` keep the batch size and the
image size dynamic:

    model/preprocess.py (resize to `resized_size`, pad with the mean colour) -> `RetinaNet.features`
    (normalise, backbone) -> head (level by level) -> model/anchors.py (`AnchorGenerator.grid_anchors`)
    -> model/fast_postprocess.py (`detect_padded`: top-k, decode, clip, class-wise NMS, the best D)
    -> `rescale_boxes` to the input image's pixels.

Output layout (fixed shapes, padded):
    boxes (N, D, 4) float32 XYXY in input pixels, scores (N, D) float32, labels (N, D) int64,
    num_detections (N,) int64. Row i of image n is a detection when i < num_detections[n]; rows
    are sorted by decreasing score; padding rows hold boxes 0, scores 0 and labels -1.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..model.fast_postprocess import NO_LABEL, detect_padded, unpad
from ..model.preprocess import dims, pad, resize
from ..model.retinanet import RetinaNet, rescale_boxes

#: Output names, in order, of the exported graphs.
OUTPUT_NAMES = ("boxes", "scores", "labels", "num_detections")

__all__ = ["NO_LABEL", "OUTPUT_NAMES", "ExportableDetector", "unpad"]


class ExportableDetector(nn.Module):
    """A RetinaNet's inference path, preprocessing to detections, in one traceable forward.

    Args: model, a RetinaNet (its weights are shared, not copied).
    forward: images (N, 3, H, W) float32 RGB in [0, 1] -> (boxes (N, D, 4), scores (N, D),
    labels (N, D), num_detections (N,)); see the module docstring.
    """

    def __init__(self, model: RetinaNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        model, config = self.model, self.model.config
        h, w = dims(images, 2, 3)
        x, (new_h, new_w) = resize(images, config.min_size, config.max_size)
        x = pad(x, config.size_divisible, fill=config.image_mean)
        padded = dims(x, 2, 3)
        features = model.features(x)
        level_logits, level_deltas, level_anchors = [], [], []
        for level, feature in enumerate(features):  # level by level: a symbolic split is not traceable
            level_logits.append(model.head.classification_head([feature]))  # (N, Hi*Wi*A, K)
            level_deltas.append(model.head.regression_head([feature]))  # (N, Hi*Wi*A, 4)
            level_anchors.append(model.anchor_generator.grid_anchors(level, padded, dims(feature, 2, 3),
                                                                     feature.device))
        one = x.new_ones(())  # sizes times a float32 tensor: a 0-dim tensor in every mode
        sizes = torch.stack([one * new_h, one * new_w])[None]  # (1, 2): every image of the batch has this size
        boxes, scores, labels, count = detect_padded(model.postprocessor, level_logits, level_deltas, level_anchors,
                                                     sizes)
        return rescale_boxes(boxes, from_size=(new_h, new_w), to_size=(h, w)), scores, labels, count
