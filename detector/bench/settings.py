"""The sizes each benchmark mode runs at: full, quick (`--quick`) and tiny (the smoke test).

The model config is the same in the full and quick modes (torchvision's retinanet_resnet50_fpn,
91 classes, random weights, trainable BatchNorm: what `from_torchvision` reproduces); only the
image sizes, batch sizes and repetitions shrink. The tiny mode (the smoke test: structure, not
speed) swaps in a ResNet-18-FPN-64 with 5 classes so that it runs in seconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class BenchSettings:
    """Attributes:
    mode: "full", "quick" or "tiny".
    num_classes: K of both models (91: torchvision's COCO head).
    backbone, fpn_channels: ResNet-50 and 256 (torchvision's retinanet_resnet50_fpn) except in
        the tiny mode, which only checks that everything runs.
    train_size, train_batch, train_boxes: square training images (a multiple of 128), images per
        step, boxes per image of the training-step benchmarks (1, 2, 6, 7).
    train_rounds, train_warmup: interleaved rounds of the training-step loop.
    matmul_size: side of the square matmul that measures the machine's peak FLOP/s.
    assign_size, assign_batch, assign_boxes: anchors of a square image of this side, batch, and
        boxes per image of the assignment + loss benchmark (3).
    post_size, post_batch: the same for post-processing (4).
    small_rounds: interleaved rounds of benchmarks 3 and 4.
    coco_images, coco_rounds: images of the synthetic COCO evaluation (5) and its rounds.
    pipeline_source_size: side of the synthetic JPEGs the data pipeline decodes and resizes to
        train_size (6); pipeline_images: how many distinct JPEGs are written.
    memory_boxes, memory_size, memory_batch: box counts, image side and batch of the
        peak-memory points (8), one fresh process each.
    """

    mode: str = "full"
    num_classes: int = 91
    backbone: str = "resnet50"
    fpn_channels: int = 256
    train_size: int = 384
    train_batch: int = 2
    train_boxes: int = 20
    train_rounds: int = 5
    train_warmup: int = 1
    matmul_size: int = 2048
    assign_size: int = 512
    assign_batch: int = 8
    assign_boxes: tuple[int, ...] = (20, 200)
    post_size: int = 512
    post_batch: int = 8
    small_rounds: int = 7
    coco_images: int = 5000
    coco_rounds: int = 2
    pipeline_source_size: int = 480
    pipeline_images: int = 16
    memory_boxes: tuple[int, ...] = (10, 100, 1000)
    memory_size: int = 384
    memory_batch: int = 2

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


FULL = BenchSettings()
QUICK = replace(
    FULL, mode="quick", train_size=256, train_rounds=3, small_rounds=5, coco_rounds=1, pipeline_source_size=320,
    pipeline_images=8, memory_size=256,
)
TINY = replace(
    FULL, mode="tiny", num_classes=5, backbone="resnet18", fpn_channels=64, train_size=128, train_batch=1, train_rounds=1, train_warmup=1, matmul_size=256,
    assign_size=256, assign_batch=2, post_size=256, post_batch=2, small_rounds=1, coco_images=50, coco_rounds=1,
    pipeline_source_size=160, pipeline_images=2, memory_boxes=(10, 100), memory_size=128, memory_batch=1,
)
MODES = {"full": FULL, "quick": QUICK, "tiny": TINY}
