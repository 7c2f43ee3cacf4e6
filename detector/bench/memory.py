"""Peak memory of one training step as the number of boxes per image grows (benchmark entry 8).

Each point (implementation, boxes per image) runs in a fresh process, so that no point inherits
the allocator caches or the peak of another:

- CUDA: `torch.cuda.max_memory_allocated()` over the step (after `reset_peak_memory_stats`),
  minus what was allocated before it;
- CPU: the process's peak resident set (VmHWM, reset through /proc/self/clear_refs just before
  the step) minus its resident set before the step. (tracemalloc does not see torch's
  allocations.) Where clear_refs cannot be written, ru_maxrss is used, which may include the
  peak of building the model.

Ours runs in float32 next to torchvision in float32 (like for like), and once more at the
project's default precision with the most boxes. "Linear in boxes" is checked by a least-squares
line through the points: the largest residual must stay within 5% of the largest value, or within
RSS_NOISE_MIB on the CPU, where the peak resident set of the same step can move from run to run
with what the allocator keeps: a flat curve with that noise is linear (slope ~0).

On the CPU each point's process runs with glibc's mmap threshold fixed (MALLOC_MMAP_THRESHOLD_,
MMAP_THRESHOLD_BYTES): a large block freed goes back to the system at once, so the peak resident
set follows the tensors alive instead of how much freed memory the heap kept, which depends on
the order two busy threads allocated in (the bench's points run two at a time).

Run one point by hand: `MALLOC_MMAP_THRESHOLD_=131072 python -m detector.bench.memory --impl ours --boxes 1000 --size 384`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .settings import BenchSettings

LINEAR_TOLERANCE = 0.05
#: Run-to-run noise of a CPU peak-RSS point (MiB) the linearity check allows: what glibc's heap keeps
#: of freed memory varies (far less with MMAP_THRESHOLD_BYTES fixed; docs/benchmarks.md).
RSS_NOISE_MIB = 32.0
#: glibc's mmap threshold of every point's process (its default, fixed: glibc otherwise raises it
#: as blocks are freed).
MMAP_THRESHOLD_BYTES = 128 * 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_point(impl: str, boxes: int, size: int, batch: int, num_classes: int, device: torch.device,
                  precision: str = "fp32", backbone: str = "resnet50", fpn_channels: int = 256) -> dict:
    """Peak extra memory (MiB) of one training step; see the module doc."""
    from .models import ours_from, random_boxes, sgd, torchvision_retinanet

    tv = torchvision_retinanet(num_classes, size, backbone=backbone, fpn_channels=fpn_channels)
    model = tv if impl == "torchvision" else ours_from(tv, channels_last=precision == "default", backbone=backbone)
    if impl != "torchvision":
        del tv
    model = model.to(device).train()
    opt = sgd(model)
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(batch, 3, size, size, generator=g) * 255).to(torch.uint8).to(device)
    gt_boxes, labels = random_boxes(batch, boxes, size, g, num_classes=num_classes)
    gt_boxes, labels = gt_boxes.to(device), labels.to(device)
    valid = torch.ones(labels.shape, dtype=torch.bool, device=device)

    def step():
        if impl == "torchvision":
            targets = [{"boxes": b, "labels": lab} for b, lab in zip(gt_boxes, labels)]
            loss = sum(model([im.float() / 255 for im in images], targets).values())
        else:
            amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "default")
            with amp:
                parts, _ = model.loss(model(images), gt_boxes, labels, valid)
            loss = parts["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        method = "torch.cuda.max_memory_allocated"
    else:
        before = _status_kib("VmRSS") * 1024
        reset = _reset_peak_rss()
        step()
        peak = _status_kib("VmHWM") * 1024 - before
        method = "VmHWM after clear_refs" if reset else "VmHWM (not reset: includes model building)"
    return {"impl": impl, "boxes": boxes, "precision": precision, "peak_mib": peak / 2**20, "method": method}


def run_point(impl: str, boxes: int, s: BenchSettings, device: torch.device, precision: str = "fp32") -> dict:
    """measure_point in a fresh Python process."""
    cmd = [sys.executable, "-m", "detector.bench.memory", "--impl", impl, "--boxes", str(boxes),
           "--size", str(s.memory_size), "--batch", str(s.memory_batch), "--classes", str(s.num_classes),
           "--device", str(device), "--precision", precision, "--threads", str(torch.get_num_threads()),
           "--backbone", s.backbone, "--fpn-channels", str(s.fpn_channels)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES)}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def linear_fit(xs, ys, noise_mib: float = 0.0) -> dict:
    """Least-squares line through (xs, ys) and whether every point is within LINEAR_TOLERANCE of it
    (relative to the largest value) or within noise_mib."""
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    slope, intercept = np.polyfit(xs, ys, 1)
    residual = float(np.max(np.abs(ys - (slope * xs + intercept))))
    relative = residual / float(np.max(np.abs(ys)))
    return {"mib_per_box": float(slope), "intercept_mib": float(intercept), "max_residual_mib": residual,
            "max_residual_relative": relative,
            "linear": relative <= LINEAR_TOLERANCE or residual <= noise_mib}


def memory_case(s: BenchSettings, device: torch.device, *, with_default: bool = True) -> dict[str, dict]:
    jobs = [(impl, m) for impl in ("ours", "torchvision") for m in s.memory_boxes]
    # Peak RSS is per process, so on CPU two points may run at once; CUDA points share one GPU.
    with ThreadPoolExecutor(max_workers=2 if device.type == "cpu" else 1) as pool:
        done = dict(zip(jobs, pool.map(lambda job: run_point(job[0], job[1], s, device), jobs)))
    runs = {impl: [done[(impl, m)] for m in s.memory_boxes] for impl in ("ours", "torchvision")}
    points = {impl: [r["peak_mib"] for r in rs] for impl, rs in runs.items()}
    most = max(s.memory_boxes)
    noise = RSS_NOISE_MIB if device.type == "cpu" else 0.0
    entry = {
        "image_size": s.memory_size, "batch": s.memory_batch, "boxes_per_image": list(s.memory_boxes),
        "method": runs["ours"][0]["method"],
        "allocator": f"glibc, MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD_BYTES}" if device.type == "cpu" else "torch's",
        "ours_fp32_peak_mib": points["ours"], "torchvision_fp32_peak_mib": points["torchvision"],
        "ours_fit": linear_fit(s.memory_boxes, points["ours"], noise),
        "torchvision_fit": linear_fit(s.memory_boxes, points["torchvision"], noise),
    }
    if with_default:
        entry[f"ours_default_peak_mib_at_{most}"] = run_point("ours", most, s, device, "default")["peak_mib"]
    entry["linear_in_boxes"] = entry["ours_fit"]["linear"]
    entry["ratio_is"] = f"torchvision / ours peak at {most} boxes per image, both float32"
    entry["ratio"] = points["torchvision"][-1] / points["ours"][-1]
    return {"memory": entry}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impl", choices=("ours", "torchvision"), required=True)
    p.add_argument("--boxes", type=int, required=True)
    p.add_argument("--size", type=int, default=384)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--classes", type=int, default=91)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("fp32", "default"), default="fp32")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--fpn-channels", type=int, default=256)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(json.dumps(measure_point(a.impl, a.boxes, a.size, a.batch, a.classes, torch.device(a.device), a.precision,
                                      a.backbone, a.fpn_channels)))


if __name__ == "__main__":
    main()
