"""The LightningDataModule: one of three datasets, its transforms and padded batches.

Plain keyword arguments, so that LightningCLI YAML sets each of them under `data:`.

- "synthetic": root holds train.json, val.json and images/ (scripts/make_synthetic.py).
- "coco": root holds annotations/instances_{train,val}2017.json, train2017/ and val2017/.
- "voc": root holds VOCdevkit/VOC2007, VOC2012 (or is the VOCdevkit folder); training
  concatenates `voc_train_set` of every year in `voc_train_years`, validation is
  `voc_val_set` of `voc_val_year`.
- "yolo": root is an Ultralytics data YAML (or a folder holding data.yaml); its train and val
  splits (detector/data/yolo.py).
- "csv": keras-retinanet CSV files: root holds train.csv, val.csv (train_ann, val_ann) and
  classes.csv (class_file) (detector/data/csv_dataset.py).

`prepare_data` only downloads (download=True, coco and voc) or generates the synthetic set when
it is missing; `setup` builds the datasets (idempotent, cheap to call again on each process) and
scans their images once (detector/data/scan.py, cached beside the images): with
`on_bad_image="skip"` (the default) unreadable images are left out with one summary line and
listed in the run folder's data_report.json; "error" stops at the first one. An image that
becomes unreadable during the run is replaced by the next readable one, and listed in the same
report. Batches are the dicts of detector.data.collate.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from pycocotools.coco import COCO
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from detector.data.coco import COCODetection, load_json, parse_categories
from detector.data.collate import DetectionCollator
from detector.data.csv_dataset import CSVDetection, read_csv_classes
from detector.data.dataset import DetectionDataset
from detector.data.download import VOC_ARCHIVES, download_coco, download_voc
from detector.data.errors import DatasetError
from detector.data.scan import ON_BAD_IMAGE, ScanReport, apply_scan, scan_dataset, summary_line
from detector.data.synthetic import SYNTHETIC_CLASSES, make_synthetic, synthetic_exists
from detector.data.transforms import DetectionTransform, build_transforms
from detector.data.voc import VOC_CLASSES, VOCDetection
from detector.data.yolo import YOLODetection, data_yaml_path, read_data_yaml, yolo_class_names
from detector.io import write_atomic
from detector.training.reliability import leaf_datasets, resumable_train_loader

DATASETS = ("synthetic", "coco", "voc", "yolo", "csv")


class DetectionDataModule(LightningDataModule):
    """Datasets, transforms and loaders for training and validation.

    Args:
        dataset: "synthetic", "coco", "voc", "yolo" or "csv".
        root: the dataset folder (see the module doc).
        train_ann, val_ann: annotation files (coco, synthetic: COCO JSON; csv: CSV), relative to root
            unless absolute; defaults in the module doc.
        class_file: csv: the `class_name,id` file, relative to root unless absolute.
        train_images, val_images: image folders the annotations' file_name values are relative
            to, relative to root unless absolute (synthetic: images; coco: train2017, val2017).
        voc_train_years, voc_train_set: training image sets, one per year, concatenated.
        voc_val_year, voc_val_set: the validation image set.
        classes: VOC-format class list (default the 20 VOC classes).
        subset_classes: VOC: keep only these classes (and the images holding them).
        max_train_images, max_val_images: draw at most this many images (coco, voc), with `seed`.
        seed: seed of those draws.
        min_size, max_size: resize so the short side is min_size, the long one at most max_size.
        train_min_sizes: short sides drawn per training image (scale jitter); default [min_size].
        hflip_prob, color_jitter: training augmentation, see detector.data.transforms.
        batch_size, val_batch_size: images per batch (val defaults to batch_size).
        num_workers, pin_memory, persistent_workers: DataLoader settings.
        size_divisible: pad batches to a multiple of this (the largest FPN stride).
        drop_empty: drop training images without boxes (validation keeps every image).
        download: let prepare_data fetch coco / voc (see scripts/download_*.py).
        download_base_url: a mirror (or file:// folder) holding the archives.
        synthetic_num_train, synthetic_num_val, synthetic_seed: what prepare_data generates
            when dataset="synthetic" and root has no data yet.
        on_bad_image: "skip" leaves unreadable images out of training and validation (a summary
            line, the list in <run folder>/data_report.json); "error" stops at the first one.
    """

    def __init__(
        self,
        dataset: str = "synthetic",
        root: str = "data/synthetic",
        train_ann: str | None = None,
        val_ann: str | None = None,
        train_images: str | None = None,
        val_images: str | None = None,
        voc_train_years: list[str] | None = None,
        voc_train_set: str = "trainval",
        voc_val_year: str = "2007",
        voc_val_set: str = "test",
        classes: list[str] | None = None,
        subset_classes: list[str] | None = None,
        max_train_images: int | None = None,
        max_val_images: int | None = None,
        seed: int = 0,
        min_size: int = 800,
        max_size: int = 1333,
        train_min_sizes: list[int] | None = None,
        hflip_prob: float = 0.5,
        color_jitter: float = 0.2,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        size_divisible: int = 128,
        drop_empty: bool = False,
        download: bool = False,
        download_base_url: str | None = None,
        synthetic_num_train: int = 2000,
        synthetic_num_val: int = 300,
        synthetic_seed: int = 0,
        on_bad_image: str = "skip",
        class_file: str = "classes.csv",
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
        if on_bad_image not in ON_BAD_IMAGE:
            raise ValueError(f"on_bad_image must be one of {ON_BAD_IMAGE}, got {on_bad_image!r}")
        self.save_hyperparameters()
        self.dataset = dataset
        self.root = Path(root)
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.size_divisible = size_divisible
        self.train_dataset: Dataset | None = None
        self.val_dataset: DetectionDataset | None = None
        self._label_space: tuple[list[str], list[int]] | None = None
        self.scan_reports: dict[str, list[ScanReport]] = {}
        self.skipped_during_run: dict[str, int] = {}  # path -> times an item stood in for it
        self._report_file: Path | None = None

    # ------------------------------------------------------------------ paths
    def _path(self, value: str | None, default: str) -> Path:
        return self.root / (value if value is not None else default)  # an absolute value wins

    def _coco_files(self, split: str) -> tuple[Path, Path]:
        """(annotation file, image folder) of a coco-format split ("train" or "val")."""
        hp = self.hparams
        ann, images = (hp.train_ann, hp.train_images) if split == "train" else (hp.val_ann, hp.val_images)
        if self.dataset == "synthetic":
            return self._path(ann, f"{split}.json"), self._path(images, "images")
        return self._path(ann, f"annotations/instances_{split}2017.json"), self._path(images, f"{split}2017")

    def _voc_devkit(self) -> Path:
        devkit = self.root / "VOCdevkit"
        return devkit if devkit.is_dir() else self.root

    # ------------------------------------------------------------------ hooks
    def prepare_data(self) -> None:
        """Download (download=True) or generate the synthetic set if missing; nothing else."""
        hp = self.hparams
        if self.dataset == "synthetic":
            if not synthetic_exists(self.root):
                make_synthetic(
                    self.root, num_train=hp.synthetic_num_train, num_val=hp.synthetic_num_val,
                    seed=hp.synthetic_seed, progress=True,
                )  # fmt: skip
        elif hp.download and self.dataset == "coco":
            download_coco(self.root, base_url=hp.download_base_url)
        elif hp.download and self.dataset == "voc":
            years = {str(y) for y in (hp.voc_train_years or ["2007"])} | {str(hp.voc_val_year)}
            archives = [f"{y}-{s}" for y in sorted(years) for s in ("trainval", "test") if f"{y}-{s}" in VOC_ARCHIVES]
            download_voc(self.root, archives=archives, base_url=hp.download_base_url)

    def setup(self, stage: str | None = None) -> None:
        """Build the validation dataset, and the training one for stage "fit" (once each)."""
        hp = self.hparams
        if self._report_file is None:  # Trainer.log_dir is a collective: every process asks, once
            self._report_file = self.report_path()
        if self.val_dataset is None:
            self.val_dataset = self._scanned(self._build("val", self._eval_transforms()), "val")
        if stage in (None, "fit") and self.train_dataset is None:
            # one draw that follows seed_everything: the augmentation stream and the epoch orders
            self.train_seed = int(torch.randint(0, 2**31 - 1, ()).item())
            train_transforms = build_transforms(
                True,
                hp.train_min_sizes or [hp.min_size],
                hp.max_size,
                hflip_prob=hp.hflip_prob,
                color_jitter=hp.color_jitter,
                seed=self.train_seed,
            )
            self.train_dataset = self._scanned(self._build("train", train_transforms), "train")
            train_space = _label_space_of(self.train_dataset)
            if train_space != _label_space_of(self.val_dataset):
                raise DatasetError(self.root, "training and validation data have different class lists")

    # ------------------------------------------------------------------ bad images
    def _scanned(self, dataset: Dataset, split: str) -> Dataset:
        """`dataset` after the scan of its images (see the module doc); reports the skipped ones."""
        leaves = leaf_datasets(dataset)
        reports = [scan_dataset(leaf, split=split) for leaf in leaves]
        for leaf, report in zip(leaves, reports):
            apply_scan(leaf, report, self.hparams.on_bad_image)
        self.scan_reports[split] = reports
        if not any(len(leaf) for leaf in leaves):
            raise DatasetError(self.root, f"none of the {split} images can be read")
        if any(r.bad for r in reports):
            report_file = self._write_data_report()
            line = summary_line(reports, str(report_file) if report_file else "the list below")
            if self._is_global_zero():
                print(line, file=sys.stderr)
                if report_file is None:
                    for r in reports:
                        for bad in r.bad:
                            print(f"  {bad['file']}: {bad['reason']}", file=sys.stderr)
        # a ConcatDataset keeps its parts' lengths from when it was built
        return ConcatDataset(leaves) if isinstance(dataset, ConcatDataset) else dataset

    def _is_global_zero(self) -> bool:
        return self.trainer is None or self.trainer.is_global_zero

    def report_path(self) -> Path | None:
        """<run folder>/data_report.json: the logger's folder, else the trainer's root; None without a trainer."""
        if self.trainer is None:
            return None
        folder = self.trainer.log_dir or self.trainer.default_root_dir
        return Path(folder) / "data_report.json"

    def _write_data_report(self) -> Path | None:
        path = self._report_file
        if path is None or not self._is_global_zero():
            return path
        report = {
            "on_bad_image": self.hparams.on_bad_image,
            "scan": {split: [r.to_dict() for r in reports] for split, reports in self.scan_reports.items()},
            "skipped_during_run": [{"file": f, "times": n} for f, n in sorted(self.skipped_during_run.items())],
        }
        return write_atomic(path, json.dumps(report, indent=1))

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Count the images that became unreadable during the run (see the module doc)."""
        skipped = batch.pop("skipped_images", None) if isinstance(batch, dict) else None
        if skipped:
            for path in skipped:
                self.skipped_during_run[path] = self.skipped_during_run.get(path, 0) + 1
            self._write_data_report()
        return batch

    def _build(self, split: str, transforms: DetectionTransform) -> Dataset:
        hp = self.hparams
        train = split == "train"
        max_images = hp.max_train_images if train else hp.max_val_images
        drop_empty = hp.drop_empty and train
        if self.dataset == "yolo":
            return YOLODetection(self.root, split, transforms=transforms, drop_empty=drop_empty,
                                 max_images=max_images, seed=hp.seed)
        if self.dataset == "csv":
            ann = self._path(hp.train_ann if train else hp.val_ann, f"{split}.csv")
            return CSVDetection(ann, self._path(hp.class_file, ""), transforms=transforms, drop_empty=drop_empty,
                                max_images=max_images, seed=hp.seed)
        if self.dataset in ("synthetic", "coco"):
            ann_file, image_root = self._coco_files(split)
            return COCODetection(
                ann_file, image_root, transforms=transforms, drop_empty=drop_empty, max_images=max_images, seed=hp.seed
            )
        common = dict(
            classes=hp.classes, subset_classes=hp.subset_classes, max_images=max_images, seed=hp.seed,
            transforms=transforms, drop_empty=drop_empty,
        )  # fmt: skip
        # A custom VOC-format dataset: root itself holds Annotations/, so there is no year folder.
        custom = (self.root / "Annotations").is_dir()
        if not train:
            return VOCDetection(self._voc_devkit(), None if custom else hp.voc_val_year, hp.voc_val_set, **common)
        years = [None] if custom else hp.voc_train_years or ["2007"]
        parts = [VOCDetection(self._voc_devkit(), year, hp.voc_train_set, **common) for year in years]
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    # ------------------------------------------------------------------ label space
    def _labels(self) -> tuple[list[str], list[int]]:
        """(class_names, label_to_category_id), without building datasets when possible."""
        for built in (self.val_dataset, self.train_dataset):
            if built is not None:
                return _label_space_of(built)
        if self._label_space is None:
            hp = self.hparams
            if self.dataset in ("voc", "yolo", "csv"):
                names = (yolo_class_names(read_data_yaml(self.root), data_yaml_path(self.root))
                         if self.dataset == "yolo" else read_csv_classes(self._path(hp.class_file, ""))
                         if self.dataset == "csv" else list(hp.subset_classes or hp.classes or VOC_CLASSES))
                self._label_space = (names, list(range(1, len(names) + 1)))
            else:
                ann_file = self._coco_files("val")[0]
                if self.dataset == "synthetic" and not ann_file.is_file():
                    names = list(SYNTHETIC_CLASSES)
                    self._label_space = (names, list(range(1, len(names) + 1)))
                else:
                    self._label_space = parse_categories(load_json(ann_file), ann_file)
        return self._label_space

    @property
    def class_names(self) -> list[str]:
        return list(self._labels()[0])

    @property
    def label_to_category_id(self) -> list[int]:
        return list(self._labels()[1])

    @property
    def num_classes(self) -> int:
        return len(self._labels()[0])

    def val_coco_gt(self) -> COCO:
        """Ground truth of the validation set (pycocotools), for the evaluator."""
        if self.val_dataset is None:
            self.setup("validate")
        return self.val_dataset.coco_gt()

    # ------------------------------------------------------------------ loaders
    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        common = dict(
            batch_size=batch_size,
            drop_last=train and len(dataset) >= batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),  # pinning needs a GPU
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            collate_fn=DetectionCollator(self.size_divisible),
        )
        if train:  # epoch orders and augmentation by position: resumes mid-epoch exactly, any world size
            return resumable_train_loader(dataset, seed=getattr(self, "train_seed", self.hparams.seed), **common)
        return DataLoader(dataset, shuffle=False, **common)

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            self.setup("fit")
        return self._loader(self.train_dataset, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        if self.val_dataset is None:
            self.setup("validate")
        return self._loader(self.val_dataset, self.val_batch_size, train=False)

    def eval_dataset(self, split: str) -> Dataset:
        """A split through the evaluation transforms (resize only), e.g. to evaluate on "train"."""
        if split == "val":
            return self.val_dataset if self.val_dataset is not None else self._build("val", self._eval_transforms())
        return self._build(split, self._eval_transforms())

    def _eval_transforms(self) -> DetectionTransform:
        return build_transforms(False, self.hparams.min_size, self.hparams.max_size)

    def eval_dataloader(self, dataset: Dataset) -> DataLoader:
        return self._loader(dataset, self.val_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()


def _label_space_of(dataset: Dataset) -> tuple[list[str], list[int]]:
    first = leaf_datasets(dataset)[0]
    return list(first.class_names), list(first.label_to_category_id)


def datamodule_from_config(path: str | os.PathLike, **overrides) -> "DetectionDataModule":
    """The DetectionDataModule of a training config's `data:` section (YAML, parsed safely)."""
    import yaml

    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as err:
        raise DatasetError(path, f"cannot read config ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise DatasetError(path, f"malformed YAML ({str(err).splitlines()[0]})") from None
    data = (config or {}).get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict):
        raise DatasetError(path, "no data: section")
    data = data.get("init_args", data) if "class_path" in data else data
    try:
        return DetectionDataModule(**{**data, **overrides})
    except TypeError as err:
        raise DatasetError(path, f"bad data: section ({err})") from None
