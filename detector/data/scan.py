"""The dataset scan: every image of a split checked once, cheaply, before training reads it.

A check (`check_image`) opens the file and decodes its header (Pillow reads the size and the
EXIF orientation without decoding pixels), compares the displayed size with the annotation's
declared one, and looks for the format's end marker in the file's last bytes (JPEG's EOI,
PNG's IEND): a file cut short by an interrupted copy lacks it. Only such a suspicious file is
decoded in full (trailing bytes after the end marker are legal), so a sound image costs one
header read and one small tail read.

Results are cached in a JSON file beside the images (`CACHE_NAME` in the image folder), one entry
per file name keyed by (file size, mtime in ns, declared height and width): a second run reads
the cache and checks nothing, a changed file (or a changed annotation) is checked again. A folder
that cannot be written is scanned every time.

`scan_dataset` returns a `ScanReport`; `apply_scan` keeps the readable images of a dataset
(policy "skip") or raises `DatasetError` for the first unreadable one (policy "error").
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from detector.data.dataset import DetectionDataset
from detector.data.errors import DatasetError
from detector.data.images import load_rgb_image, read_image_size
from detector.io import write_atomic

CACHE_NAME = ".detector_scan.json"
CACHE_VERSION = 1
ON_BAD_IMAGE = ("error", "skip")
TAIL_BYTES = 4096  # enough for the end marker plus the trailing bytes some cameras append

# Format signature at offset 0 -> end marker that must appear in the file's tail.
_END_MARKERS = ((b"\xff\xd8", b"\xff\xd9"), (b"\x89PNG\r\n\x1a\n", b"IEND"))


def check_image(path: str | os.PathLike, declared: tuple[int, int] | None = None) -> str | None:
    """Why the image at `path` is unusable, or None when it passes the scan.

    Args:
        path: the image file.
        declared: (height, width) the annotation declares, or None to skip the size check.
    """
    path = Path(path)
    try:
        size = read_image_size(path)
    except DatasetError as err:
        return err.reason
    if declared is not None and tuple(size) != tuple(declared):
        return (f"decoded image is {size[0]}x{size[1]} (h x w, EXIF orientation applied) but the annotation "
                f"declares {declared[0]}x{declared[1]}")  # the words of DetectionDataset.load_image
    if _lacks_end_marker(path):
        try:
            load_rgb_image(path)
        except DatasetError as err:
            return err.reason
    return None


def _lacks_end_marker(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(8)
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - TAIL_BYTES))
            tail = f.read()
    except OSError:
        return True
    for signature, end in _END_MARKERS:
        if head.startswith(signature):
            return end not in tail
    return False


@dataclass
class ScanReport:
    """What the scan of one split found.

    Attributes:
        split: "train" or "val" (or any name given).
        num_images: how many images were checked.
        bad: [{"file": path, "reason": why}, ...] of the unreadable images, in dataset order.
        bad_indices: (B,) int64 dataset indices of those images.
        cached: how many results came from the cache.
        cache_file: the cache used, or None when none could be written.
    """

    split: str
    num_images: int
    bad: list[dict] = field(default_factory=list)
    bad_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cached: int = 0
    cache_file: str | None = None

    def to_dict(self) -> dict:
        return {"split": self.split, "num_images": self.num_images, "num_unreadable": len(self.bad),
                "unreadable": self.bad, "cached": self.cached, "cache_file": self.cache_file}


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("files"), dict):
        return {}
    return data["files"]


def _write_cache(path: Path, files: dict) -> bool:
    """Write the cache atomically (detector.io); False where the folder is read-only."""
    try:
        write_atomic(path, json.dumps({"version": CACHE_VERSION, "files": files}, separators=(",", ":")))
    except OSError:
        return False
    return True


def scan_images(
    image_root: str | os.PathLike,
    file_names: Iterable[str],
    declared_sizes: np.ndarray,
    *,
    split: str = "train",
    use_cache: bool = True,
    progress: bool = True,
) -> ScanReport:
    """Check each image `image_root / file_names[i]` against `declared_sizes[i]` ((n, 2) h, w).

    Results found in the cache with the same key are taken as they are; the others are checked
    and written back to the cache (entries of other files, e.g. another split's, are kept).
    """
    root = Path(image_root)
    names = [str(n) for n in file_names]
    sizes = np.asarray(declared_sizes, dtype=np.int64).reshape(-1, 2)
    cache_path = root / CACHE_NAME
    cache = _read_cache(cache_path) if use_cache else {}
    report = ScanReport(split=split, num_images=len(names))
    bad_indices, changed = [], False
    show = progress and len(names) >= 1000
    for i, name in enumerate(tqdm(names, desc=f"scanning {split} images", unit="img", disable=not show,
                                  leave=False)):
        path = root / name
        try:
            st = path.stat()
            key = [st.st_size, st.st_mtime_ns, int(sizes[i, 0]), int(sizes[i, 1])]
        except OSError:
            key = None  # missing: nothing to key on, and nothing to cache
        entry = cache.get(name) if key is not None else None
        if isinstance(entry, list) and len(entry) == 5 and entry[:4] == key:
            reason = entry[4]
            report.cached += 1
        else:
            reason = check_image(path, (int(sizes[i, 0]), int(sizes[i, 1])))
            if key is not None:
                cache[name] = [*key, reason]
                changed = True
        if reason is not None:
            bad_indices.append(i)
            report.bad.append({"file": str(path), "reason": str(reason)})
    report.bad_indices = np.asarray(bad_indices, dtype=np.int64)
    if use_cache and (not changed or _write_cache(cache_path, cache)):
        report.cache_file = str(cache_path)
    return report


def scan_dataset(dataset: DetectionDataset, *, split: str = "train", use_cache: bool = True,
                 progress: bool = True) -> ScanReport:
    """`scan_images` over the images of `dataset` (its table's file names and declared sizes)."""
    return scan_images(dataset.image_root, dataset.table.file_names, dataset.table.sizes, split=split,
                       use_cache=use_cache, progress=progress)


def apply_scan(dataset: DetectionDataset, report: ScanReport, on_bad_image: str) -> DetectionDataset:
    """`dataset` without the images `report` found unreadable ("skip"), or a `DatasetError` ("error").

    The dataset is changed in place (its table loses those rows) and returned.
    """
    if on_bad_image not in ON_BAD_IMAGE:
        raise ValueError(f"on_bad_image must be one of {ON_BAD_IMAGE}, got {on_bad_image!r}")
    dataset.on_bad_image = on_bad_image
    if not report.bad:
        return dataset
    if on_bad_image == "error":
        first = report.bad[0]
        more = f" ({len(report.bad) - 1} more unreadable {report.split} images)" if len(report.bad) > 1 else ""
        raise DatasetError(first["file"], f"{first['reason']}{more}")
    keep = np.setdiff1d(np.arange(len(dataset)), report.bad_indices)
    dataset.table = dataset.table.select(keep)
    if hasattr(dataset, "_coco_gt"):
        dataset._coco_gt = None  # built again over the kept images
    return dataset


def summary_line(reports: list[ScanReport], where: str) -> str | None:
    """"3 of 5,011 training images unreadable, skipped: see WHERE", or None when all were readable."""
    bad = sum(len(r.bad) for r in reports)
    if not bad:
        return None
    total = sum(r.num_images for r in reports)
    split = reports[0].split
    noun = {"train": "training", "val": "validation"}.get(split, split)
    return f"{bad:,} of {total:,} {noun} images unreadable, skipped: see {where}"
