"""The whole detector as one traceable module: raw images in, final detections out.

Shape symbols: N images, H x W their (common) size, K classes, A anchors per location, Hi x Wi a
level's size, C candidates per image (the per-level top-k, all levels), D = detections_per_img.

`ExportableDetector(model)(images)` runs what `RetinaNet.predict` runs, step for step, written so
that `torch.onnx.export` (TorchScript tracing) and `torch.export` keep the batch size and the image
size dynamic:

    normalise -> resize (scale = min(min_size / short side, max_size / long side), bilinear)
    -> pad to a multiple of size_divisible -> backbone, head -> per level: top-k of the logits
    -> sigmoid -> decode -> clip -> class-wise NMS within each image (score > score_thresh)
    -> the best D per image -> boxes mapped back to the input image's pixels.

Output layout (fixed shapes, padded):
    boxes (N, D, 4) float32 XYXY in input pixels, scores (N, D) float32, labels (N, D) int64,
    num_detections (N,) int64. Row i of image n is a detection when i < num_detections[n]; rows
    are sorted by decreasing score; padding rows hold boxes 0, scores 0 and labels -1.

Sizes are 0-dim tensors while tracing for ONNX (Python ints would be frozen into the graph) and
ints (SymInts under torch.export) otherwise; `_dims`, `_min` and `resized_size` take either.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import nms

from ..model.retinanet import RetinaNet

#: Output names, in order, of the exported graphs.
OUTPUT_NAMES = ("boxes", "scores", "labels", "num_detections")
#: Label of a padding row.
NO_LABEL = -1


def _dims(x: Tensor, *dims: int):
    """x's sizes along dims: 0-dim int64 tensors when tracing for ONNX, ints otherwise."""
    if torch.jit.is_tracing():
        shape = torch._shape_as_tensor(x)
        return tuple(shape[d] for d in dims)
    return tuple(x.shape[d] for d in dims)


def _min(a, b):
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return torch.minimum(torch.as_tensor(a), torch.as_tensor(b))
    return torch.sym_min(a, b)


def resized_size(h, w, min_size: int, max_size: int):
    """(h', w') of an (h, w) image after predict's resize: floor(side * scale), in float64 as F.interpolate."""
    if isinstance(h, Tensor):
        hf, wf = h.double(), w.double()
        # a true division (number / tensor would multiply by a rounded reciprocal)
        lo, hi = torch.full_like(hf, min_size), torch.full_like(hf, max_size)
        scale = torch.minimum(lo / torch.minimum(hf, wf), hi / torch.maximum(hf, wf))
        return (hf * scale).floor().long(), (wf * scale).floor().long()
    scale = torch.sym_min(min_size / torch.sym_min(h, w), max_size / torch.sym_max(h, w))
    return math.trunc(h * scale), math.trunc(w * scale)  # floor of a positive size; a .pt2 can store trunc


class ClassWiseNMS(torch.autograd.Function):
    """NMS of each image and class apart, as ONNX's NonMaxSuppression defines it.

    Args: boxes (N, C, 4) XYXY, scores (N, K, C) (a candidate scores only in its own class),
    iou_threshold, score_threshold (only scores above it are kept).
    Returns: selected (T, 3) int64 rows (image, class, candidate).

    In eager mode and under torch.export it is NMS over the groups image * K + class, each group's
    boxes shifted apart as torchvision's batched_nms does (its choice of algorithm by box count is a
    branch torch.export cannot take on a data-dependent count); exported to ONNX it is one
    NonMaxSuppression node, which runs every image and class apart (no shifted coordinates).
    """

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float) -> Tensor:
        n, k, c = scores.shape
        selected = (scores > score_threshold).nonzero()  # (S, 3): image, class, candidate
        image, label, cand = selected.unbind(1)
        offsets = (image * k + label).to(boxes) * (boxes.max() + 1)  # (S,): groups never overlap
        keep = nms(boxes[image, cand] + offsets[:, None], scores[image, label, cand], iou_threshold)
        return selected[keep]

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold: float, score_threshold: float):
        return g.op(
            "NonMaxSuppression", boxes, scores,
            g.op("Constant", value_t=torch.tensor([sys.maxsize], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([score_threshold], dtype=torch.float32)),
        )


class ExportableDetector(nn.Module):
    """A RetinaNet's inference path, preprocessing to detections, in one traceable forward.

    Args: model, a RetinaNet (its weights are shared, not copied).
    forward: images (N, 3, H, W) float32 RGB in [0, 1] -> (boxes (N, D, 4), scores (N, D),
    labels (N, D), num_detections (N,)); see the module docstring.
    """

    def __init__(self, model: RetinaNet) -> None:
        super().__init__()
        config, post = model.config, model.postprocessor
        self.backbone = model.backbone
        self.head = model.head
        self.box_coder = post.box_coder
        self.num_classes = config.num_classes
        self.min_size, self.max_size, self.size_divisible = config.min_size, config.max_size, config.size_divisible
        self.score_thresh, self.topk_candidates = float(post.score_thresh), int(post.topk_candidates)
        self.nms_thresh, self.detections_per_img = float(post.nms_thresh), int(post.detections_per_img)
        self.register_buffer("image_mean", model.image_mean.detach().clone(), persistent=False)
        self.register_buffer("image_std", model.image_std.detach().clone(), persistent=False)
        generator = model.anchor_generator
        for level in range(generator.num_levels):  # (A, 4) anchors of a cell, centred on (0, 0)
            self.register_buffer(f"cell_anchors_{level}", generator.cell_anchors(level), persistent=False)
        self.num_levels = generator.num_levels

    def preprocess(self, images: Tensor):
        """(N, 3, H, W) in [0, 1] -> normalised, resized, padded batch (N, 3, H', W'), and (h', w') unpadded."""
        h, w = _dims(images, 2, 3)
        new_h, new_w = resized_size(h, w, self.min_size, self.max_size)
        x = (images - self.image_mean) / self.image_std
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
        div = self.size_divisible
        pad_h, pad_w = (new_h + div - 1) // div * div, (new_w + div - 1) // div * div
        return F.pad(x, (0, pad_w - new_w, 0, pad_h - new_h)), (new_h, new_w)

    def level_anchors(self, level: int, padded_size, feature: Tensor) -> Tensor:
        """Anchors (Hi * Wi * A, 4) of one level, as AnchorGenerator: stride = padded size // feature size."""
        fh, fw = _dims(feature, 2, 3)
        stride_y, stride_x = padded_size[0] // fh, padded_size[1] // fw
        ys = torch.arange(fh, dtype=torch.float32, device=feature.device) * stride_y
        xs = torch.arange(fw, dtype=torch.float32, device=feature.device) * stride_x
        shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=-1).reshape(-1, 1, 4)  # (Hi*Wi, 1, 4)
        return (shifts + getattr(self, f"cell_anchors_{level}")[None]).reshape(-1, 4)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        h, w = _dims(images, 2, 3)
        x, (new_h, new_w) = self.preprocess(images)
        padded = _dims(x, 2, 3)
        features = self.backbone(x)
        k = self.num_classes

        # per level: the top-k (anchor, class) logits of each image, as PostProcessor
        top_logits, top_deltas, top_anchors, top_labels = [], [], [], []
        for level, feature in enumerate(features):
            logits = self.head.classification_head([feature]).float()  # (N, Hi*Wi*A, K)
            deltas = self.head.regression_head([feature])  # (N, Hi*Wi*A, 4)
            anchors = self.level_anchors(level, padded, feature)  # (Hi*Wi*A, 4)
            flat = logits.flatten(1)
            values, idx = flat.topk(_min(self.topk_candidates, _dims(flat, 1)[0]), dim=1)  # (N, top)
            anchor_idx = torch.div(idx, k, rounding_mode="floor")
            top_logits.append(values)
            top_labels.append(idx % k)
            top_deltas.append(torch.gather(deltas, 1, anchor_idx[..., None].expand(-1, -1, 4)))
            top_anchors.append(anchors[anchor_idx])
        scores = torch.sigmoid(torch.cat(top_logits, dim=1))  # (N, C)
        labels = torch.cat(top_labels, dim=1)  # (N, C)
        boxes = self.box_coder.decode(torch.cat(top_deltas, dim=1), torch.cat(top_anchors, dim=1))  # (N, C, 4)
        one = boxes.new_ones(())  # sizes times a float32 tensor: a 0-dim tensor in every mode
        upper = torch.stack([one * v for v in (new_w, new_h, new_w, new_h)])
        boxes = torch.minimum(boxes.clamp(min=0), upper)

        # class-wise NMS within each image; a candidate scores only in its own class
        dense = torch.full_like(scores, -1.0)[:, None, :].repeat(1, k, 1)  # (N, K, C)
        candidate = torch.where(scores > self.score_thresh, scores, torch.full_like(scores, -1.0))
        dense = dense.scatter(1, labels[:, None, :], candidate[:, None, :])
        selected = ClassWiseNMS.apply(boxes, dense, self.nms_thresh, self.score_thresh)  # (T, 3)
        image, cand = selected[:, 0], selected[:, 2]
        kept = torch.full_like(scores, -1.0)  # (N, C): the score of each kept candidate, -1 elsewhere
        kept = kept.index_put((image, cand), scores[image, cand])

        # the best D of each image, best first, padded to D rows
        d = self.detections_per_img
        top = _min(d, _dims(kept, 1)[0])
        best, order = kept.topk(top, dim=1)  # (N, top)
        pad = d - top
        best = F.pad(best, (0, pad), value=-1.0)
        order = F.pad(order, (0, pad), value=0)
        valid = best > self.score_thresh  # (N, D)
        det_boxes = torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4))  # (N, D, 4)
        det_labels = torch.gather(labels, 1, order)
        ratio_h, ratio_w = (one * h) / (one * new_h), (one * w) / (one * new_w)  # float32, as rescale_boxes
        det_boxes = det_boxes * torch.stack([ratio_w, ratio_h, ratio_w, ratio_h])
        zero = torch.zeros_like(best)
        return (
            torch.where(valid[..., None], det_boxes, zero[..., None]),
            torch.where(valid, best, zero),
            torch.where(valid, det_labels, torch.full_like(det_labels, NO_LABEL)),
            valid.sum(dim=1),
        )


def unpad(boxes: Tensor, scores: Tensor, labels: Tensor, num_detections: Tensor) -> list[dict[str, Tensor]]:
    """The padded outputs -> one dict per image with "boxes" (D_n, 4), "scores" (D_n,), "labels" (D_n,)."""
    return [{"boxes": b[:m], "scores": s[:m], "labels": l[:m]}
            for b, s, l, m in zip(boxes, scores, labels, num_detections.tolist())]
