"""COCO box evaluation: detections -> COCO results -> pycocotools' 12 numbers and per-class AP.

    from detector.evaluation import CocoDetectionAccumulator, format_metrics_table
    acc = CocoDetectionAccumulator()
    acc.update(image_ids, detections)          # in the validation loop, each image once
    metrics = acc.compute(coco_gt, label_to_category_id)
    print(format_metrics_table(metrics))       # metrics["AP"], ..., metrics["per_class"]
"""

from .accumulator import CocoDetectionAccumulator
from .coco import (
    BACKENDS,
    COCO_METRIC_NAMES,
    NO_GT,
    EvaluationError,
    detections_to_coco_results,
    evaluate_coco,
    is_no_gt,
    load_coco_gt,
    load_results,
    per_class_ap,
    validate_results,
)
from .report import format_metrics_table, save_metrics

__all__ = [
    "BACKENDS",
    "COCO_METRIC_NAMES",
    "NO_GT",
    "CocoDetectionAccumulator",
    "EvaluationError",
    "detections_to_coco_results",
    "evaluate_coco",
    "format_metrics_table",
    "is_no_gt",
    "load_coco_gt",
    "load_results",
    "per_class_ap",
    "save_metrics",
    "validate_results",
]
