"""The benchmarks: each returns JSON-ready entries {measured values..., "ratio": float}.

A ratio is always "higher is better for this project" and always taken side by side in one run
(see timing.py). Entries and what their ratio is:

- train_step_fp32: training-step time torchvision / ours, both float32 (= images/s ours / theirs).
- train_step_default: torchvision float32 / ours at the project's default precision (bf16 autocast
  + channels_last).
- assign_loss: matcher + loss, forward and backward to the head outputs, torchvision
  (`RetinaNet.compute_loss`) / ours (`RetinaNet.loss`), for each box count; the ratio is the
  smallest of them.
- postprocess: torchvision's `postprocess_detections` / ours `RetinaNet.detect`, dense candidates.
- coco_eval: pycocotools / faster-coco-eval on the same results, with the largest difference of
  the 12 COCO numbers.
- pipeline_vs_train: data pipeline images/s on one worker (decode + augment + collate) / training
  images/s (ours, default precision).
- mfu: FLOP/s of our default-precision training step (FlopCounterMode: convolutions and matmuls,
  forward and backward) / the FLOP/s of a large bf16 matmul timed in the same loop.
- memory: see memory.py.

The training-step loop times six functions in alternation (three training steps, one pipeline
batch, two matmuls) so that entries 1, 2, 6 and 7 are side by side: `time_training` runs it once,
and one function per entry reads its entry from that run.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..model.fast_focal import use_compiled
from ..model.retinanet import HeadOutputs
from .models import feature_sizes, ours_from, random_boxes, sgd, torchvision_retinanet
from .settings import BenchSettings
from .timing import Interleaved

TARGETS = {
    "train_step_fp32": 1.0,
    "train_step_default": 1.8,
    "assign_loss": 5.0,
    "postprocess": 3.0,
    "coco_eval": 3.0,
    "pipeline_vs_train": 3.0,
    "mfu": 0.8,
    "memory": None,  # the target is "linear in boxes", see memory.py
}


def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


# --------------------------------------------------------------------------------------------
# 1, 2, 6, 7: training steps, data pipeline, matmul peak


@contextlib.contextmanager
def _one_worker():
    """Run as a DataLoader worker does: one torch thread (and one OpenCV thread)."""
    import cv2

    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)


def _pipeline(s: BenchSettings, root: Path):
    """A callable that decodes, augments and collates one training batch of synthetic JPEGs."""
    from ..data import COCODetection, DetectionCollator, build_transforms, make_synthetic

    make_synthetic(root, num_train=s.pipeline_images, num_val=1, seed=0, image_size=s.pipeline_source_size,
                   max_object_size=min(48, s.pipeline_source_size // 3))
    dataset = COCODetection(
        root / "train.json", root / "images",
        transforms=build_transforms(True, min_size=s.train_size, max_size=s.train_size, seed=0),
    )
    collate = DetectionCollator()
    position = [0]

    def batch():
        with _one_worker():
            items = []
            for _ in range(s.train_batch):
                items.append(dataset[position[0] % len(dataset)])
                position[0] += 1
            return collate(items)

    return batch


CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward",
            "aten::_slow_conv2d_backward")


def _conv_time(step) -> tuple[float, float]:
    """Seconds of one call of `step` spent in convolution kernels, forward and backward (torch.profiler's
    self CPU time of the CONV_OPS), and their share of the call's wall time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        step()
        wall = time.perf_counter() - start
    conv_s = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in CONV_OPS) / 1e6
    return conv_s, conv_s / wall


@dataclass
class TrainingRun:
    """What the interleaved training loop measured; each training entry is read from it."""

    it: Interleaved  # times of torchvision_fp32, ours_fp32, ours_default, pipeline, matmul_fp32, matmul_bf16
    common: dict  # image size, batch, boxes, rounds
    batch: int
    matmul_size: int
    flops_ours: float  # FLOPs of one training step (ours; conv + matmul, forward and backward)
    flops_tv: float
    conv_s: float | None  # CPU: seconds of one default-precision step in convolution kernels
    conv_share: float | None

    def images_per_s(self, name: str) -> float:
        return self.batch / self.it.median(name)


def training_cases(s: BenchSettings, device: torch.device) -> dict[str, dict]:
    """Entries train_step_fp32, train_step_default, pipeline_vs_train and mfu, from one timing loop."""
    run = time_training(s, device)
    return {"train_step_fp32": train_step_fp32_entry(run), "train_step_default": train_step_default_entry(run),
            "pipeline_vs_train": pipeline_vs_train_entry(run, s), "mfu": mfu_entry(run)}


def time_training(s: BenchSettings, device: torch.device) -> TrainingRun:
    """Six functions timed in alternation: three training steps, one pipeline batch, two matmuls."""
    from torch.utils.flop_counter import FlopCounterMode

    n, size = s.train_batch, s.train_size
    tv = torchvision_retinanet(s.num_classes, size, backbone=s.backbone, fpn_channels=s.fpn_channels).to(device).train()
    ours32 = ours_from(tv, backbone=s.backbone).to(device).train()
    ours_default = ours_from(tv, channels_last=True, backbone=s.backbone).to(device).train()
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8).to(device)
    boxes, labels = random_boxes(n, s.train_boxes, size, g, num_classes=s.num_classes)
    boxes, labels = boxes.to(device), labels.to(device)
    valid = torch.ones(labels.shape, dtype=torch.bool, device=device)
    tv_images = [im.float() / 255 for im in images]  # the same pixels, in torchvision's input format
    tv_targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]
    opt_tv, opt_32, opt_default = sgd(tv), sgd(ours32), sgd(ours_default)

    def step_tv():
        loss = sum(tv(tv_images, tv_targets).values())
        opt_tv.zero_grad(set_to_none=True)
        loss.backward()
        opt_tv.step()

    def step_ours(model, opt, amp):
        with _autocast(device, amp):
            parts, _ = model.loss(model(images), boxes, labels, valid)
        opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        opt.step()

    mm = s.matmul_size
    a32 = torch.randn(mm, mm, generator=g).to(device)
    b32 = torch.randn(mm, mm, generator=g).to(device)
    a16, b16 = a32.bfloat16(), b32.bfloat16()

    counter = FlopCounterMode(display=False)
    with counter:
        step_ours(ours32, opt_32, False)
    flops_ours = counter.get_total_flops()
    counter = FlopCounterMode(display=False)
    with counter:
        step_tv()
    flops_tv = counter.get_total_flops()

    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        pipeline = _pipeline(s, Path(tmp))
        it = Interleaved(
            {
                "torchvision_fp32": step_tv,
                "ours_fp32": lambda: step_ours(ours32, opt_32, False),
                "ours_default": lambda: step_ours(ours_default, opt_default, True),
                "pipeline": pipeline,
                "matmul_fp32": lambda: torch.matmul(a32, b32),
                "matmul_bf16": lambda: torch.matmul(a16, b16),
            },
            rounds=s.train_rounds, warmup=s.train_warmup, device=device,
        )

    conv_s, conv_share = _conv_time(lambda: step_ours(ours_default, opt_default, True)) if device.type == "cpu" else (None, None)
    common = {"image_size": size, "batch": n, "boxes_per_image": s.train_boxes, "rounds": it.rounds}
    return TrainingRun(it, common, n, mm, flops_ours, flops_tv, conv_s, conv_share)


def train_step_fp32_entry(run: TrainingRun) -> dict:
    it = run.it
    return {
        **run.common,
        "ours_images_per_s": run.images_per_s("ours_fp32"),
        "torchvision_images_per_s": run.images_per_s("torchvision_fp32"),
        "ours_step_s": it.median("ours_fp32"),
        "torchvision_step_s": it.median("torchvision_fp32"),
        "spread": {k: it.spread(k) for k in ("ours_fp32", "torchvision_fp32")},
        "ratio": it.ratio("torchvision_fp32", "ours_fp32"),
    }


def train_step_default_entry(run: TrainingRun) -> dict:
    it = run.it
    return {
        **run.common,
        "precision": "bf16 autocast + channels_last (ours) vs float32 (torchvision)",
        "ours_images_per_s": run.images_per_s("ours_default"),
        "torchvision_images_per_s": run.images_per_s("torchvision_fp32"),
        "ours_step_s": it.median("ours_default"),
        "ours_default_vs_ours_fp32": it.ratio("ours_fp32", "ours_default"),
        "spread": {k: it.spread(k) for k in ("ours_default", "torchvision_fp32")},
        "ratio": it.ratio("torchvision_fp32", "ours_default"),
    }


def pipeline_vs_train_entry(run: TrainingRun, s: BenchSettings) -> dict:
    return {
        **run.common,
        "source_image_size": s.pipeline_source_size,
        "pipeline": "synthetic JPEG decode + train augmentation (resize, flip, colour jitter) + collate, "
                    "1 torch and 1 OpenCV thread",
        "pipeline_images_per_s_per_worker": run.images_per_s("pipeline"),
        "train_images_per_s": run.images_per_s("ours_default"),
        "train_images_per_s_fp32": run.images_per_s("ours_fp32"),
        "ratio": run.it.ratio("ours_default", "pipeline"),
    }


def mfu_entry(run: TrainingRun) -> dict:
    it, mm, flops = run.it, run.matmul_size, run.flops_ours
    peak16 = 2 * mm**3 / it.median("matmul_bf16")
    mfu_default = flops / (2 * mm**3) * it.ratio("matmul_bf16", "ours_default")
    return {
        **run.common,
        "train_flops_per_step": flops,
        "torchvision_flops_per_step": run.flops_tv,
        "matmul_size": mm,
        "peak_flops_per_s_bf16": peak16,
        "peak_flops_per_s_fp32": 2 * mm**3 / it.median("matmul_fp32"),
        "achieved_flops_per_s_default": flops / it.median("ours_default"),
        "achieved_flops_per_s_fp32": flops / it.median("ours_fp32"),
        "mfu_default_bf16": mfu_default,
        "mfu_fp32": flops / (2 * mm**3) * it.ratio("matmul_fp32", "ours_fp32"),
        # CPU: where the bf16 step's time goes (torch.profiler, one step): the convolutions'
        # share, and their own FLOP/s over the bf16 peak (FLOPs are all in convolutions here)
        "conv_share_of_step_default": run.conv_share,
        "conv_mfu_bf16": flops / run.conv_s / peak16 if run.conv_s else None,  # None: no conv op seen
        "ratio": mfu_default,
    }


# --------------------------------------------------------------------------------------------
# 3: target assignment + loss


def _anchors(ours, size: int, device: torch.device):
    fs = feature_sizes(size)
    anchors = ours.anchor_generator((size, size), fs, device=device)
    return anchors, ours.anchor_generator.num_anchors_per_level(fs)


def _torchvision_anchors(tv, n: int, size: int, device: torch.device) -> list[torch.Tensor]:
    from torchvision.models.detection.image_list import ImageList

    images = ImageList(torch.zeros(n, 3, size, size, device=device), [(size, size)] * n)
    feats = [torch.zeros(n, 1, h, w, device=device) for h, w in feature_sizes(size)]
    return tv.anchor_generator(images, feats)


def assign_loss_case(s: BenchSettings, device: torch.device) -> dict[str, dict]:
    n, size, k = s.assign_batch, s.assign_size, s.num_classes
    tv = torchvision_retinanet(k, size, backbone=s.backbone, fpn_channels=s.fpn_channels).to(device).train()
    ours = ours_from(tv, backbone=s.backbone).to(device).train()
    anchors, per_level = _anchors(ours, size, device)
    tv_anchors = _torchvision_anchors(tv, n, size, device)
    r = anchors.shape[0]
    g = torch.Generator().manual_seed(1)
    cls = (torch.randn(n, r, k, generator=g) - 4.0).to(device).requires_grad_()
    reg = (torch.randn(n, r, 4, generator=g) * 0.1).to(device).requires_grad_()
    entry = {
        "batch": n, "image_size": size, "anchors": r, "classes": k, "includes_backward": True,
        "same_anchors": all(torch.equal(a, anchors) for a in tv_anchors),
    }
    ratios = []
    for m in s.assign_boxes:
        boxes, labels = random_boxes(n, m, size, g, num_classes=k)
        boxes, labels = boxes.to(device), labels.to(device)
        valid = torch.ones(labels.shape, dtype=torch.bool, device=device)
        targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]
        outputs = HeadOutputs(cls, reg, anchors, per_level)

        def run_tv():
            cls.grad = reg.grad = None
            out = tv.compute_loss(targets, {"cls_logits": cls, "bbox_regression": reg}, tv_anchors)
            (out["classification"] + out["bbox_regression"]).backward()

        def run_ours():
            cls.grad = reg.grad = None
            parts, _ = ours.loss(outputs, boxes, labels, valid)
            parts["loss"].backward()

        if "ours_first_call_s" not in entry:  # includes torch.compile of the focal loss where it is used
            start = time.perf_counter()
            run_ours()
            if device.type == "cuda":
                torch.cuda.synchronize()
            entry["ours_first_call_s"] = time.perf_counter() - start
            # the path that ran (after the call: False if compiling failed and fast_focal fell back)
            entry["ours_cls_loss_compiled"] = use_compiled(cls)
        it = Interleaved({"torchvision": run_tv, "ours": run_ours}, rounds=s.small_rounds, warmup=1, device=device)
        ratio = it.ratio("torchvision", "ours")
        ratios.append(ratio)
        entry[f"boxes_{m}"] = {
            "ours_s": it.median("ours"), "torchvision_s": it.median("torchvision"), "rounds": it.rounds,
            "ratio": ratio,
        }
    entry["ratio_is"] = "the smallest of the per-box-count ratios"
    entry["ratio"] = min(ratios)
    return {"assign_loss": entry}


# --------------------------------------------------------------------------------------------
# 4: post-processing


def _canonical(d: dict) -> torch.Tensor:
    """(D, 6) rows (score, label, x1, y1, x2, y2) in lexicographic order: detections of equal score
    may come in either order from two correct implementations (a sort is not stable across them)."""
    rows = torch.cat([d["scores"][:, None].float(), d["labels"][:, None].float(), d["boxes"].float()], 1).cpu()
    return rows[sorted(range(len(rows)), key=lambda i: tuple(rows[i].tolist()))] if len(rows) else rows


def _same_detections(a: list[dict], b: list[dict]) -> bool:
    """The same detections per image (boxes within 1e-3 px, scores within 1e-5, same labels), in any
    order among equal scores."""
    for x, y in zip(a, b, strict=True):
        if len(x["boxes"]) != len(y["boxes"]):
            return False
        cx, cy = _canonical(x), _canonical(y)
        if not torch.equal(cx[:, 1], cy[:, 1]):
            return False
        if not torch.allclose(cx[:, 2:], cy[:, 2:], atol=1e-3, rtol=0):
            return False
        if not torch.allclose(cx[:, 0], cy[:, 0], atol=1e-5, rtol=0):
            return False
    return True


def postprocess_case(s: BenchSettings, device: torch.device) -> dict[str, dict]:
    n, size, k = s.post_batch, s.post_size, s.num_classes
    tv = torchvision_retinanet(k, size, backbone=s.backbone, fpn_channels=s.fpn_channels).to(device).eval()
    ours = ours_from(tv, backbone=s.backbone).to(device).eval()
    anchors, per_level = _anchors(ours, size, device)
    r = anchors.shape[0]
    g = torch.Generator().manual_seed(2)
    # Logits spread so that about a third of all (anchor, class) scores pass 0.05.
    cls = (torch.randn(n, r, k, generator=g) * 2.0 - 4.0).to(device)
    reg = (torch.randn(n, r, 4, generator=g) * 0.2).to(device)
    sizes = torch.tensor([[size, size]] * n, device=device)
    tv_outputs = {"cls_logits": list(cls.split(per_level, dim=1)), "bbox_regression": list(reg.split(per_level, dim=1))}
    tv_anchors = [list(anchors.split(per_level))] * n
    outputs = HeadOutputs(cls, reg, anchors, per_level)

    @torch.no_grad()
    def run_tv():
        return tv.postprocess_detections(tv_outputs, tv_anchors, [(size, size)] * n)

    @torch.no_grad()
    def run_ours():
        return ours.detect(outputs, sizes)

    same = _same_detections(run_ours(), run_tv())
    it = Interleaved({"torchvision": run_tv, "ours": run_ours}, rounds=s.small_rounds, warmup=1, device=device)
    dets = run_ours()
    passing = float((cls > math.log(0.05 / 0.95)).sum()) / n
    return {
        "postprocess": {
            "batch": n, "image_size": size, "anchors": r, "classes": k,
            "scores_above_thresh_per_image": passing,
            "candidates_per_image": sum(min(1000, c * k) for c in per_level),
            "detections_per_image": sum(len(d["boxes"]) for d in dets) / n,
            "same_detections": same,
            "ours_s": it.median("ours"), "torchvision_s": it.median("torchvision"), "rounds": it.rounds,
            "ratio": it.ratio("torchvision", "ours"),
        }
    }


# --------------------------------------------------------------------------------------------
# 5: COCO evaluation


def synthetic_coco(num_images: int, num_classes: int = 80, seed: int = 0) -> tuple[dict, list[dict]]:
    """Ground truth (a COCO dict) and results for `num_images` 640x480 images, made in memory.

    Each image has 1-15 boxes; 85% of them are found again (jittered, scores 0.3-1), and each
    image gets 3-15 false positives (scores 0-0.7), so AP lands around 0.5.
    """
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id:06d}.jpg"})
        m = int(rng.integers(1, 16))
        wh = rng.uniform(8, 240, (m, 2))
        xy = rng.uniform(0, 1, (m, 2)) * (np.array([640, 480]) - wh)
        cats = rng.integers(1, num_classes + 1, m)
        for b, c in zip(np.concatenate([xy, wh], 1).tolist(), cats.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": c, "bbox": b,
                                "area": b[2] * b[3], "iscrowd": 0})
        found = rng.uniform(0, 1, m) < 0.85
        jitter = rng.normal(0, 0.08, (m, 4)) * np.concatenate([wh, wh], 1)
        det = np.concatenate([xy, wh], 1) + jitter
        det[:, 2:] = np.maximum(det[:, 2:], 1.0)
        for b, c, sc in zip(det[found].tolist(), cats[found].tolist(), rng.uniform(0.3, 1.0, m)[found].tolist()):
            results.append({"image_id": image_id, "category_id": c, "bbox": b, "score": sc})
        f = int(rng.integers(3, 16))
        fwh = rng.uniform(8, 200, (f, 2))
        fxy = rng.uniform(0, 1, (f, 2)) * (np.array([640, 480]) - fwh)
        for b, c, sc in zip(np.concatenate([fxy, fwh], 1).tolist(), rng.integers(1, num_classes + 1, f).tolist(),
                            rng.uniform(0.0, 0.7, f).tolist()):
            results.append({"image_id": image_id, "category_id": c, "bbox": b, "score": sc})
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, num_classes + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def coco_eval_case(s: BenchSettings, device: torch.device) -> dict[str, dict]:
    from ..evaluation import evaluate_coco
    from ..evaluation.coco import COCO_METRIC_NAMES, load_coco_gt

    gt, results = synthetic_coco(s.coco_images)
    coco_gt = load_coco_gt(gt)
    metrics = {}

    def run(backend):
        def fn():
            metrics[backend] = evaluate_coco(coco_gt, results, backend=backend, per_class=False)
        return fn

    it = Interleaved({"pycocotools": run("pycocotools"), "faster_coco_eval": run("faster_coco_eval")},
                     rounds=s.coco_rounds, warmup=0)
    diffs = [abs(metrics["pycocotools"][k] - metrics["faster_coco_eval"][k]) for k in COCO_METRIC_NAMES]
    return {
        "coco_eval": {
            "images": s.coco_images, "gt_boxes": len(gt["annotations"]), "detections": len(results),
            "AP_pycocotools": metrics["pycocotools"]["AP"], "AP_faster_coco_eval": metrics["faster_coco_eval"]["AP"],
            "max_abs_diff_12_numbers": max(diffs), "identical": max(diffs) <= 1e-6,
            "pycocotools_s": it.median("pycocotools"), "faster_coco_eval_s": it.median("faster_coco_eval"),
            "rounds": it.rounds,
            "ratio": it.ratio("pycocotools", "faster_coco_eval"),
        }
    }

