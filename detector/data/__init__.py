"""From files on disk to padded batches: datasets, transforms, collate, downloads, synthetic data.

Nothing here imports Lightning; the LightningDataModule is detector/training/datamodule.py.
"""

from detector.data.annotations import AnnotationTable, coco_from_dict
from detector.data.coco import COCODetection
from detector.data.collate import PAD_LABEL, DetectionCollator, collate_detection
from detector.data.csv_dataset import CSVDetection
from detector.data.dataset import DetectionDataset
from detector.data.download import (
    COCO_ARCHIVES,
    VOC_ARCHIVES,
    DownloadError,
    RemoteFile,
    download_coco,
    download_file,
    download_voc,
    extract_archive,
)
from detector.data.errors import DatasetError, DatasetWarning
from detector.data.images import load_rgb_image
from detector.data.synthetic import (
    SYNTHETIC_CLASSES,
    SyntheticRenderer,
    SyntheticSpec,
    make_synthetic,
    synthetic_exists,
)
from detector.data.transforms import DetectionTransform, ResizeShortestEdge, build_transforms
from detector.data.voc import VOC_CLASSES, VOCDetection, voc_to_coco
from detector.data.yolo import YOLODetection

__all__ = [
    "AnnotationTable",
    "COCO_ARCHIVES",
    "COCODetection",
    "CSVDetection",
    "DatasetError",
    "DatasetWarning",
    "DetectionCollator",
    "DetectionDataset",
    "DetectionTransform",
    "DownloadError",
    "PAD_LABEL",
    "RemoteFile",
    "ResizeShortestEdge",
    "SYNTHETIC_CLASSES",
    "SyntheticRenderer",
    "SyntheticSpec",
    "VOC_ARCHIVES",
    "VOC_CLASSES",
    "VOCDetection",
    "YOLODetection",
    "build_transforms",
    "coco_from_dict",
    "collate_detection",
    "download_coco",
    "download_file",
    "download_voc",
    "extract_archive",
    "load_rgb_image",
    "make_synthetic",
    "synthetic_exists",
    "voc_to_coco",
]
