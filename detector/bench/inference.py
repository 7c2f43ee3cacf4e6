"""The `inference` entry: end-to-end prediction, raw images to detections, in images per second.

Contenders, with the same weights and config (models.py) on the same images, side by side in one
run (timing.Interleaved), at batch 1 and batch `post_batch`:

- torchvision: its RetinaNet eager, float32 (`model(images)`: its transform, network,
  post-processing and the mapping back to the images' pixels).
- ours_fp32: `RetinaNet.predict(images)`, float32.
- ours_default: `RetinaNet.predict` at the project's default precision (bf16 autocast and
  channels_last, as the configs train).
- onnxruntime: the ONNX export of ours (detector/export), float32, on CPU, when onnxruntime is
  installed.

Images: `post_batch` photos-sized (480 x 640) random images; both models resize them to a long
side of `post_size` (their min_size = max_size = post_size). The ratio is torchvision's time
over ours_default's at batch 1 (median of the per-round ratios, `small_rounds` rounds at batch 1,
half as many at the larger batch).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from .models import ours_from, torchvision_retinanet
from .settings import BenchSettings
from .timing import Interleaved

#: Target of the ratio (torchvision / ours at the default precision, batch 1).
TARGET = 1.5
#: (H, W) of the benchmark's input images: a common photo size, resized by both models.
SOURCE_SIZE = (480, 640)


def _onnx_runner(model, folder: Path):
    """A function of a batch (N, 3, H, W) running the ONNX export of `model`, or None without onnxruntime."""
    try:
        import onnx  # noqa: F401
        import onnxruntime as ort
    except ImportError:
        return None
    from ..export.exporters import export_onnx

    path = export_onnx(model, folder / "bench.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda batch: session.run(None, {"images": batch.numpy()})


def inference_case(s: BenchSettings, device: torch.device) -> dict[str, dict]:
    size, k = s.post_size, s.num_classes
    tv = torchvision_retinanet(k, size, backbone=s.backbone, fpn_channels=s.fpn_channels).to(device).eval()
    ours = ours_from(tv, backbone=s.backbone).eval()
    ours.config.min_size = ours.config.max_size = size  # the resize torchvision_retinanet gives tv
    ours_cl = ours_from(tv, backbone=s.backbone, channels_last=True).to(device).eval()
    ours_cl.config.min_size = ours_cl.config.max_size = size
    g = torch.Generator().manual_seed(4)
    images = [torch.rand(3, *SOURCE_SIZE, generator=g) for _ in range(s.post_batch)]

    with tempfile.TemporaryDirectory() as tmp:
        onnx_run = _onnx_runner(ours, Path(tmp)) if device.type == "cpu" else None
        ours = ours.to(device)
        entry: dict = {"source_size": list(SOURCE_SIZE), "resized_long_side": size, "classes": k,
                       "backbone": s.backbone, "onnxruntime": onnx_run is not None}
        for batch in sorted({1, s.post_batch}):
            on_device = [im.to(device) for im in images[:batch]]
            stacked = torch.stack(images[:batch])

            def run_tv(x=on_device):
                with torch.no_grad():
                    return tv(x)

            def run_fp32(x=on_device):
                return ours.predict(x)

            def run_default(x=on_device):
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    return ours_cl.predict(x)

            fns = {"torchvision": run_tv, "ours_fp32": run_fp32, "ours_default": run_default}
            if onnx_run is not None:
                fns["onnxruntime"] = lambda x=stacked: onnx_run(x)
            rounds = s.small_rounds if batch == 1 else max(1, s.small_rounds // 2)  # a large batch varies less
            it = Interleaved(fns, rounds=rounds, warmup=1, device=device)
            entry[f"batch_{batch}"] = {
                **{f"{name}_images_per_s": batch / it.median(name) for name in fns},
                **{f"{name}_vs_torchvision": it.ratio("torchvision", name) for name in fns if name != "torchvision"},
                "rounds": it.rounds,
            }
    entry["ratio"] = entry["batch_1"]["ours_default_vs_torchvision"]
    return {"inference": entry}


def measured(e: dict) -> str:
    """The 'measured' cell of the benchmark table."""
    parts = []
    for key in (k for k in e if k.startswith("batch_")):
        b = e[key]
        cell = (f"batch {key.split('_')[1]}: torchvision {b['torchvision_images_per_s']:.3g} img/s, ours fp32 "
                f"{b['ours_fp32_images_per_s']:.3g}, ours default {b['ours_default_images_per_s']:.3g}")
        if "onnxruntime_images_per_s" in b:
            cell += f", onnxruntime {b['onnxruntime_images_per_s']:.3g}"
        parts.append(cell)
    return "; ".join(parts) + f" ({e['source_size'][0]}x{e['source_size'][1]} -> long side {e['resized_long_side']})"
