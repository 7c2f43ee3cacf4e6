"""Every bad input of the Datasets issue, and the extremes, through the command-line entry points.

tests/data checks each bad input at the dataset level; here each one goes through a script's `main`
(scripts/evaluate.py --checkpoint, which reads a COCO-format dataset end to end: annotations,
images, model, COCO evaluation; scripts/evaluate.py --gt --results; scripts/voc_to_coco.py), and a
few through real `python scripts/...` processes (the last tests). Each case ends in one of:

- a one-line `error: <file>: <what>` on stderr and exit status 2, never a traceback;
- the documented handling (exit 0): a counted `DatasetWarning` for boxes that are dropped or
  clipped, conversion to RGB for other image modes, EXIF orientation applied, any image size.

The fixtures of tests/data (coco_json, write_coco, write_image, make_voc, rgb_jpeg_bytes, the EXIF
image) build the inputs.
"""

from __future__ import annotations

import json
import re
import math
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detector.checkpoint import save_detector
from detector.data import COCODetection
from detector.data.errors import DatasetError, DatasetWarning
from detector.model import build_retinanet
from tests.data.fixtures import coco_json, load_script, make_voc, rgb_jpeg_bytes, write_coco
from tests.data.test_image_loading import _exif_rotated_jpeg

from .helpers import REPO, corrupt_after_scan, fit_args, script_env

CATS = [(1, "a"), (2, "b")]
BOX = {"image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20]}


@pytest.fixture(scope="module")
def scripts():
    return {name: load_script(name) for name in ("evaluate", "voc_to_coco")}


@pytest.fixture(scope="module")
def detector_ckpt(tmp_path_factory):
    """An (untrained) tiny detector for the 2 classes of the corpus: evaluate.py --checkpoint runs it."""
    model = build_retinanet(num_classes=2, backbone="resnet18", fpn_channels=16, head_convs=1,
                            anchor_sizes=(16, 32, 64, 128, 256), min_size=64, max_size=64)
    return save_detector(model, tmp_path_factory.mktemp("model") / "model.ckpt")


def _config(root: Path) -> Path:
    """A training config whose data: section reads root/val.json and root/images at 64 px.

    dataset "coco" with explicit files: "synthetic" would generate a whole synthetic set in a
    root that lacks one (prepare_data).
    """
    path = root / "config.yaml"
    path.write_text(f"data:\n  dataset: coco\n  root: {root}\n  val_ann: val.json\n  val_images: images\n"
                    "  min_size: 64\n  max_size: 64\n  batch_size: 2\n  num_workers: 0\n")
    return path


# ------------------------------------------------------------------------------ COCO-format datasets
@dataclass
class Case:
    """A COCO-format val split in root: val.json (+ images/), then `alter(root)` breaks something."""

    images: list = None  # (id, file_name, height, width)
    anns: list = None
    alter: Callable[[Path], None] | None = None
    error: str | None = None  # regex of the one error line; None: exit 0
    warning: str | None = None  # regex of the DatasetWarning (exit 0)
    gt_boxes: int | None = None  # boxes in the evaluation ground truth (exit 0)

    def build(self, root: Path) -> None:
        images = self.images if self.images is not None else [(1, "1.jpg", 32, 32)]
        anns = self.anns if self.anns is not None else [BOX]
        write_coco(root, coco_json(images, anns, CATS), name="val.json")
        if self.alter:
            self.alter(root)


def _image_bytes(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda root: (root / "images" / name).write_bytes(data)


def _save(name: str, array: np.ndarray, mode: str | None = None) -> Callable[[Path], None]:
    return lambda root: Image.fromarray(array, mode=mode).save(root / "images" / name)


def _val_json(text: str) -> Callable[[Path], None]:
    return lambda root: (root / "val.json").write_text(text)


def _edit(change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Change val.json's dict in place (for values the fixtures cannot write, e.g. a 3-number bbox)."""
    def alter(root: Path) -> None:
        data = json.loads((root / "val.json").read_text())
        change(data)
        (root / "val.json").write_text(json.dumps(data))
    return alter


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height (1-bit) and holds no pixel data: the header is all a bomb needs."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)) + chunk(
        b"IEND", b"")


def _outside_file(root: Path) -> None:
    (root / "secret.jpg").write_bytes(rgb_jpeg_bytes(32, 32))  # exists, and must still not be read


def _bomb(root: Path) -> None:
    (root / "images" / "1.png").write_bytes(_png_header(20_000, 20_000))  # 400 Mpx declared in 57 bytes


def _exif(root: Path) -> None:
    _exif_rotated_jpeg(root / "images" / "1.jpg")  # stored 10x20, displayed 20x10 (h x w)


NAN = float("nan")
COCO_CASES = {
    # errors: one line naming the file
    "missing image": Case(alter=lambda root: (root / "images" / "1.jpg").unlink(), error=r"1\.jpg: image file not found"),
    "corrupt image": Case(alter=_image_bytes("1.jpg", b"not an image" * 20), error=r"1\.jpg: cannot read image"),
    "truncated JPEG": Case(alter=_image_bytes("1.jpg", rgb_jpeg_bytes(32, 32)[:-200]),
                           error=r"1\.jpg: (cannot read image|corrupt or truncated image) \(.*runcated"),
    "0-byte image": Case(alter=_image_bytes("1.jpg", b""), error=r"1\.jpg: cannot read image"),
    "0-byte annotation file": Case(alter=_val_json(""), error=r"val\.json: malformed JSON"),
    "malformed JSON": Case(alter=_val_json('{"images": [{"id": 1,'), error=r"val\.json: malformed JSON"),
    "JSON that is not COCO": Case(alter=_val_json("[1, 2, 3]"), error=r"val\.json: top level must be a JSON object"),
    "unknown category": Case(anns=[{**BOX, "category_id": 7}], error=r"val\.json: annotation 1 .* unknown category_id 7"),
    "label out of range (category id -1)": Case(anns=[{**BOX, "category_id": -1}], error=r"unknown category_id -1"),
    "annotation of an unknown image": Case(anns=[{**BOX, "image_id": 9}], error=r"refers to unknown image_id 9"),
    "bbox of 3 numbers": Case(alter=_edit(lambda d: d["annotations"][0].update(bbox=[1, 2, 3])),
                              error=r"bbox must be 4 numbers"),
    "bbox of strings": Case(alter=_edit(lambda d: d["annotations"][0].update(bbox=["1", "2", "x", "4"])),
                            error=r"bbox must be 4 numbers"),
    "duplicate image ids": Case(images=[(1, "1.jpg", 32, 32), (1, "2.jpg", 32, 32)], error=r"duplicate image ids"),
    "file_name escaping the root": Case(images=[(1, "../secret.jpg", 32, 32)], alter=_outside_file,
                                        error=r"file_name '\.\./secret\.jpg' escapes the image root \(refused\)"),
    "absolute file_name": Case(images=[(1, "/etc/hostname", 32, 32)], error=r"escapes the image root \(refused\)"),
    "declared size differs from the image": Case(images=[(1, "1.jpg", 32, 32)], alter=_image_bytes(
        "1.jpg", rgb_jpeg_bytes(16, 16)), error=r"1\.jpg: decoded image is 16x16 .* declares 32x32"),
    "non-positive declared size": Case(alter=_edit(lambda d: d["images"][0].update(height=0)),
                                       error=r"non-positive width or height"),
    "decompression bomb (400 Mpx)": Case(images=[(1, "1.png", 32, 32)], alter=_bomb,
                                         error=r"1\.png: cannot read image \(Image size \(400000000 pixels\) "
                                               r"exceeds limit"),
    # documented handling: the run goes on
    "NaN in a box": Case(anns=[BOX, {**BOX, "bbox": [NAN, 4, 5, 5]}],
                         warning=r"1 x box of zero or negative size \(dropped\)", gt_boxes=1),
    "inf in a box": Case(anns=[BOX, {**BOX, "bbox": [4, 4, math.inf, 5]}],
                         warning=r"1 x box of zero or negative size \(dropped\)", gt_boxes=1),
    "zero and negative size": Case(anns=[BOX, {**BOX, "bbox": [4, 4, 0, 5]}, {**BOX, "bbox": [4, 4, -3, 5]}],
                                   warning=r"2 x box of zero or negative size \(dropped\)", gt_boxes=1),
    "boxes outside the image": Case(anns=[BOX, {**BOX, "bbox": [40, 40, 5, 5]}, {**BOX, "bbox": [28, 28, 10, 10]}],
                                    warning=r"1 x box outside its image \(dropped\); "
                                            r"1 x box partly outside its image \(clipped\)", gt_boxes=2),
    "grayscale, RGBA and 16-bit images": Case(
        images=[(1, "g.png", 8, 8), (2, "rgba.png", 8, 8), (3, "i16.png", 8, 8)], anns=[],
        alter=lambda root: (_save("g.png", np.full((8, 8), 100, np.uint8), "L")(root),
                            _save("rgba.png", np.full((8, 8, 4), 100, np.uint8), "RGBA")(root),
                            _save("i16.png", np.full((8, 8), 40000, np.uint16))(root)), gt_boxes=0),
    "EXIF rotation": Case(images=[(1, "1.jpg", 20, 10)], anns=[{**BOX, "bbox": [1, 1, 5, 5]}], alter=_exif,
                          gt_boxes=1),
    "1x1 image": Case(images=[(1, "1.png", 1, 1)], anns=[{**BOX, "bbox": [0, 0, 1, 1]}],
                      alter=_save("1.png", np.zeros((1, 1, 3), np.uint8)), gt_boxes=1),
    "10,000 x 10,000 px image": Case(images=[(1, "1.jpg", 10_000, 10_000)], anns=[{**BOX, "bbox": [0, 0, 5000, 5000]}],
                                     gt_boxes=1),
}
SLOW_CASES = {"10,000 x 10,000 px image"}  # 100 Mpx: seconds to write and decode (docs/benchmarks.md)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_CASES else n
                                  for n in COCO_CASES])
def test_coco_format_input_through_evaluate_checkpoint(name, tmp_path, scripts, detector_ckpt, capsys, recwarn):
    case = COCO_CASES[name]
    root = tmp_path / "set"
    case.build(root)
    start = time.perf_counter()
    rc = scripts["evaluate"].main(["--checkpoint", str(detector_ckpt), "--config", str(_config(root)),
                                   "--split", "val", "--out", str(tmp_path / "metrics.json")])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert "Traceback" not in err and elapsed < 120
    dataset_warnings = [str(w.message) for w in recwarn if issubclass(w.category, DatasetWarning)]
    if case.error:  # (a progress bar may come first, on its own line)
        lines = err.strip().splitlines()
        errors = [line for line in lines if line.startswith("error: ")]
        assert rc == 2 and errors == lines[-1:], err
        assert re.search(case.error, errors[0]), errors[0]
        return
    assert rc == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert all(-1.0 <= metrics[k] <= 1.0 for k in ("AP", "AR100"))  # numbers, not NaN
    if case.warning:
        assert len(dataset_warnings) >= 1 and re.search(case.warning, dataset_warnings[0]), dataset_warnings
    else:
        assert not dataset_warnings
    # the evaluation ground truth holds the boxes training would use, not the dropped ones
    assert len(COCODetection(root / "val.json", root / "images").coco_gt().getAnnIds()) == case.gt_boxes


def test_file_name_escaping_the_root_is_never_opened(tmp_path, monkeypatch):
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: (opened.append(str(fp)), real_open(fp, *a, **k))[1])
    COCO_CASES["file_name escaping the root"].build(tmp_path)
    with pytest.raises(DatasetError):
        COCODetection(tmp_path / "val.json", tmp_path / "images")
    assert opened == []


def test_an_annotation_file_of_100000_boxes(tmp_path, scripts, capsys):
    """1,000 images x 100 boxes: loads in seconds; evaluated, one exact detection per image gives AR1 = 0.01."""
    rng = np.random.default_rng(0)
    n_images, per_image = 1000, 100
    xy = rng.uniform(0, 200, (n_images * per_image, 2)).round(1)
    wh = rng.uniform(4, 50, (n_images * per_image, 2)).round(1)
    anns = [{"image_id": 1 + k // per_image, "category_id": 1 + k % 2, "bbox": [*xy[k], *wh[k]]}
            for k in range(n_images * per_image)]
    gt_file, image_root = write_coco(tmp_path, coco_json([(i, f"{i}.jpg", 256, 256) for i in range(1, n_images + 1)],
                                                         [], CATS), name="gt.json")
    data = json.loads(gt_file.read_text())
    data["annotations"] = [{"id": k + 1, "iscrowd": 0, "area": a["bbox"][2] * a["bbox"][3], **a}
                           for k, a in enumerate(anns)]
    gt_file.write_text(json.dumps(data))

    start = time.perf_counter()
    dataset = COCODetection(gt_file, image_root)
    load_s = time.perf_counter() - start
    assert len(dataset.table.boxes) == 100_000 and load_s < 20, load_s

    results = tmp_path / "dt.json"  # the first box of every image, exactly, score 1
    results.write_text(json.dumps([{**{k: anns[i * per_image][k] for k in ("image_id", "category_id", "bbox")},
                                    "score": 1.0} for i in range(n_images)]))
    start = time.perf_counter()
    rc = scripts["evaluate"].main(["--gt", str(gt_file), "--results", str(results), "--out", str(tmp_path / "m.json")])
    eval_s = time.perf_counter() - start
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "m.json").read_text())
    # recall at 1 detection per image: 1 of the 50 boxes of class 1 in each image, 0 of class 2
    assert metrics["AR1"] == pytest.approx((1 / 50 + 0) / 2, abs=1e-6), metrics
    assert eval_s < 120, eval_s


# ------------------------------------------------------------------------------ COCO results files
GT = {"images": [{"id": 1, "width": 64, "height": 64, "file_name": "1.jpg"}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "area": 100.0, "iscrowd": 0}],
      "categories": [{"id": 3, "name": "box"}]}
DT = {"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "score": 0.9}
RESULTS_CASES = {
    "NaN score": ([{**DT, "score": NAN}], r"entry 0: non-finite score"),
    "NaN in a box": ([{**DT, "bbox": [0, NAN, 10, 10]}], r"entry 0: non-finite bbox"),
    "infinite box": ([{**DT, "bbox": [0, 0, math.inf, 10]}], r"entry 0: non-finite bbox"),
    "negative width": ([DT, {**DT, "bbox": [0, 0, -10, 10]}], r"entry 1: bbox width and height must be > 0"),
    "negative height": ([{**DT, "bbox": [0, 0, 10, -1]}], r"entry 0: bbox width and height must be > 0"),
    "unknown image id": ([{**DT, "image_id": 2}], r"entry 0: unknown image_id 2"),
    "unknown category id": ([{**DT, "category_id": 1}], r"entry 0: unknown category_id 1"),
    "0-byte results file": ("", r"is not valid JSON"),
    "results not a list": ({"annotations": [DT]}, r"expected a JSON list of detections"),
    "NaN in the ground truth": (None, r"annotations\[0\] has a non-finite bbox"),
}


@pytest.mark.parametrize("name", list(RESULTS_CASES))
def test_results_file_through_evaluate(name, tmp_path, scripts, capsys):
    results, message = RESULTS_CASES[name]
    gt = json.loads(json.dumps(GT))
    if results is None:  # the ground truth is the broken file
        gt["annotations"][0]["bbox"] = [NAN, 0, 10, 10]
        results = [DT]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(results if isinstance(results, str) else json.dumps(results))
    rc = scripts["evaluate"].main(["--gt", str(tmp_path / "gt.json"), "--results", str(tmp_path / "dt.json")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert re.search(message, lines[0]), lines[0]


# ------------------------------------------------------------------------------ VOC
VOC_IMAGE = {"000001": {"size": (32, 32), "objects": [("dog", (2, 2, 20, 20))]}}


def _voc(tmp_path, images=None, sets=None, alter=None) -> Path:
    devkit = make_voc(tmp_path, images or VOC_IMAGE, sets or {"test": ["000001"]})
    if alter:
        alter(devkit / "VOC2007")
    return devkit


VOC_CASES = {
    "malformed XML": (dict(alter=lambda f: (f / "Annotations/000001.xml").write_text("<annotation><object>")),
                      r"000001\.xml: malformed XML"),
    "0-byte XML": (dict(alter=lambda f: (f / "Annotations/000001.xml").write_text("")), r"000001\.xml: malformed XML"),
    "missing image-set file": (dict(alter=lambda f: (f / "ImageSets/Main/test.txt").unlink()),
                               r"test\.txt: image-set file not found"),
    "missing annotation file": (dict(sets={"test": ["000001", "000002"]}), r"000002\.xml: annotation file not found"),
    "unknown class name (label out of range)": (
        dict(images={"000001": {"size": (32, 32), "objects": [("unicorn", (2, 2, 20, 20))]}}),
        r"000001\.xml: unknown class 'unicorn'"),
    "non-numeric coordinate": (
        dict(images={"000001": {"size": (32, 32), "objects": [("dog", (2, "x", 20, 20))]}}), r"000001\.xml: "),
    "image id escaping the folder": (dict(sets={"test": ["../../../etc/passwd"]}), r"escapes"),
}


@pytest.mark.parametrize("name", list(VOC_CASES))
def test_voc_input_through_voc_to_coco(name, tmp_path, scripts, capsys):
    kwargs, message = VOC_CASES[name]
    devkit = _voc(tmp_path, **kwargs)
    rc = scripts["voc_to_coco"].main(["--root", str(devkit), "--split", "test", "--out", str(tmp_path / "x.json")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert re.search(message, lines[0]), lines[0]


def test_voc_bad_boxes_are_counted_and_dropped(tmp_path, scripts):
    images = {"000001": {"size": (32, 32), "objects": [("dog", (2, 2, 20, 20)), ("dog", (20, 20, 10, 10)),
                                                       ("dog", (40, 40, 50, 50))]}}
    devkit = _voc(tmp_path, images=images)
    with pytest.warns(DatasetWarning, match=r"1 x box of zero or negative size \(dropped\); "
                                            r"1 x box outside its image \(dropped\)"):
        assert scripts["voc_to_coco"].main(["--root", str(devkit), "--split", "test",
                                            "--out", str(tmp_path / "x.json")]) == 0
    assert len(json.loads((tmp_path / "x.json").read_text())["annotations"]) == 1


# ------------------------------------------------------------------------------ real command lines
def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=script_env(), capture_output=True,
                          text=True, timeout=timeout)


def _assert_one_line_error(proc: subprocess.CompletedProcess, pattern: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and re.search(pattern, last), last


@pytest.mark.slow
def test_command_lines_print_one_line_errors(tmp_path, tiny_synthetic, detector_ckpt):
    # a training image that goes bad after the scan, met by a DataLoader worker process during training
    # (train.py), with --data.on_bad_image error (the default skips it: test_bad_images.py)
    root = tmp_path / "syn"
    shutil.copytree(tiny_synthetic, root)
    bad = corrupt_after_scan(root)
    proc = _run("scripts/train.py", *fit_args(root, tmp_path / "run", "--trainer.max_steps", 8,
                                              "--trainer.num_sanity_val_steps", 0, "--data.num_workers", 1,
                                              "--data.on_bad_image", "error"))
    _assert_one_line_error(proc, rf"{bad.name}: cannot read image")

    # evaluate.py: a dataset whose file_name escapes its root; a results file with NaN
    case_root = tmp_path / "escape"
    COCO_CASES["file_name escaping the root"].build(case_root)
    _assert_one_line_error(_run("scripts/evaluate.py", "--checkpoint", detector_ckpt, "--config", _config(case_root)),
                           r"escapes the image root \(refused\)")
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    (tmp_path / "dt.json").write_text(json.dumps([{**DT, "score": NAN}]))
    _assert_one_line_error(_run("scripts/evaluate.py", "--gt", tmp_path / "gt.json", "--results", tmp_path / "dt.json"),
                           r"non-finite score")

    # voc_to_coco.py: a class that is not in the class list
    devkit = _voc(tmp_path / "voc", **VOC_CASES["unknown class name (label out of range)"][0])
    _assert_one_line_error(_run("scripts/voc_to_coco.py", "--root", devkit, "--out", tmp_path / "x.json"),
                           r"unknown class 'unicorn'")
