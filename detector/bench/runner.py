"""Runs the benchmarks in order, attaches targets, machine facts and a markdown table."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable, Iterable

import torch

from . import inference
from .cases import TARGETS, assign_loss_case, coco_eval_case, postprocess_case, training_cases
from .memory import memory_case
from .settings import BenchSettings

TARGETS.setdefault("inference", inference.TARGET)  # an entry of its own file registers its target here
#: Entry names in report order; each group of entries comes from one case function.
ENTRIES = ("train_step_fp32", "train_step_default", "assign_loss", "postprocess", "coco_eval",
           "pipeline_vs_train", "mfu", "memory", "inference")
_GROUPS: dict[str, tuple[tuple[str, ...], Callable]] = {
    "training": (("train_step_fp32", "train_step_default", "pipeline_vs_train", "mfu"), training_cases),
    "assign_loss": (("assign_loss",), assign_loss_case),
    "postprocess": (("postprocess",), postprocess_case),
    "coco_eval": (("coco_eval",), coco_eval_case),
    "memory": (("memory",), lambda s, d: memory_case(s, d, with_default=s.mode != "tiny")),
    "inference": (("inference",), inference.inference_case),
}


def machine() -> dict:
    info = {
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), None)
        flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
        info["cpu_flags"] = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2")))
    except OSError:
        pass
    try:
        info["load_average_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def _met(name: str, entry: dict) -> bool:
    if name == "memory":
        return bool(entry["linear_in_boxes"])
    ok = entry["ratio"] >= TARGETS[name]
    if name == "coco_eval":
        ok = ok and bool(entry["identical"])
    return ok


def run_benchmarks(settings: BenchSettings, *, device: str | torch.device | None = None,
                   only: Iterable[str] | None = None, log: Callable[[str], None] = print) -> dict:
    """Every benchmark (or the groups named in `only`: training, assign_loss, postprocess,
    coco_eval, memory) -> {entry name: entry, ..., "meta": {...}}."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    groups = list(_GROUPS) if only is None else list(only)
    unknown = sorted(set(groups) - set(_GROUPS))
    if unknown:
        raise ValueError(f"unknown benchmark groups {unknown}; choose from {list(_GROUPS)}")
    results: dict = {}
    seconds = {}
    for group in groups:
        log(f"[bench] {group} ...")
        start = time.perf_counter()
        results.update(_GROUPS[group][1](settings, device))
        seconds[group] = time.perf_counter() - start
        log(f"[bench] {group} done in {seconds[group]:.0f} s: " + ", ".join(
            f"{n} {results[n]['ratio']:.3g}" for n in _GROUPS[group][0]))
    for name in ENTRIES:
        if name in results:
            target = TARGETS[name]
            results[name]["target"] = "memory linear in boxes" if target is None else target
            results[name]["met"] = _met(name, results[name])
    ordered = {name: results[name] for name in ENTRIES if name in results}
    ordered["meta"] = {
        "mode": settings.mode, "device": str(device), "settings": settings.as_dict(), "seconds": seconds,
        "machine": machine(), "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }
    return ordered


def _measured(name: str, e: dict) -> str:
    if name in ("train_step_fp32", "train_step_default"):
        return (f"ours {e['ours_images_per_s']:.3g} img/s, torchvision {e['torchvision_images_per_s']:.3g} img/s "
                f"({e['image_size']} px, batch {e['batch']})")
    if name == "assign_loss":
        parts = [f"{k.split('_')[1]} boxes: {v['torchvision_s'] * 1e3:.0f} / {v['ours_s'] * 1e3:.0f} ms ({v['ratio']:.2f}x)"
                 for k, v in e.items() if k.startswith("boxes_")]
        loss = "compiled" if e.get("ours_cls_loss_compiled") else "eager"
        return ("torchvision / ours, fwd+bwd, batch {}: ".format(e["batch"]) + "; ".join(parts)
                + f"; our focal loss {loss}, first call {e.get('ours_first_call_s', float('nan')):.1f} s")
    if name == "postprocess":
        return (f"torchvision {e['torchvision_s'] * 1e3:.0f} ms, ours {e['ours_s'] * 1e3:.0f} ms, batch {e['batch']}, "
                f"{e['scores_above_thresh_per_image']:.3g} scores > 0.05 per image, same detections: {e['same_detections']}")
    if name == "coco_eval":
        return (f"pycocotools {e['pycocotools_s']:.1f} s, faster-coco-eval {e['faster_coco_eval_s']:.1f} s, "
                f"{e['images']} images, {e['detections']} detections, max |diff| {e['max_abs_diff_12_numbers']:.1e}")
    if name == "pipeline_vs_train":
        return (f"pipeline {e['pipeline_images_per_s_per_worker']:.3g} img/s per worker, "
                f"training {e['train_images_per_s']:.3g} img/s")
    if name == "mfu":
        return (f"{e['train_flops_per_step'] / 1e9:.0f} GFLOP/step; achieved {e['achieved_flops_per_s_default'] / 1e9:.0f}"
                f" GFLOP/s bf16 (peak {e['peak_flops_per_s_bf16'] / 1e9:.0f}); fp32 MFU {e['mfu_fp32']:.2f}"
                + ("" if not e.get("conv_mfu_bf16") else
                   f"; convolutions {e['conv_share_of_step_default']:.0%} of the bf16 step, at "
                   f"{e['conv_mfu_bf16']:.2f} of the bf16 peak"))
    if name == "inference":
        return inference.measured(e)
    if name == "memory":
        key = max(e["boxes_per_image"])
        return (f"ours {', '.join(f'{v:.0f}' for v in e['ours_fp32_peak_mib'])} MiB, torchvision "
                f"{', '.join(f'{v:.0f}' for v in e['torchvision_fp32_peak_mib'])} MiB at "
                f"{', '.join(map(str, e['boxes_per_image']))} boxes; ours {e['ours_fit']['mib_per_box']:.3g} MiB/box, "
                f"residual {e['ours_fit']['max_residual_relative']:.1%} (max {key})")
    return ""


def format_table(results: dict) -> str:
    """The markdown table of docs/benchmarks.md."""
    lines = ["| entry | ratio (higher is better for us) | target | met | measured |", "|---|---|---|---|---|"]
    for name in ENTRIES:
        if name not in results:
            continue
        e = results[name]
        target = e["target"] if isinstance(e["target"], str) else f">= {e['target']}"
        lines.append(f"| {name} | {e['ratio']:.2f} | {target} | {'yes' if e['met'] else 'no'} | {_measured(name, e)} |")
    return "\n".join(lines)
