"""scripts/predict.py on a folder with unreadable files: skipped with a warning each, the rest predicted."""

from __future__ import annotations

import json
import shutil

import pytest

import detector
from tests.data.fixtures import load_script, rgb_jpeg_bytes, write_image

GOOD = ["a.jpg", "c.png", "e.jpg"]
BAD = {"b.jpg": b"", "d.jpg": None, "f.png": b"<html>404</html>"}  # None: a truncated JPEG


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = detector.build_retinanet(num_classes=3, backbone="resnet18", fpn_channels=16, head_convs=1,
                                     min_size=64, max_size=64, prior_prob=0.3)
    return detector.save_detector(model, tmp_path_factory.mktemp("ckpt") / "m.ckpt")


@pytest.fixture
def folders(tmp_path):
    """(a folder of 3 good and 3 unreadable images, a folder of the 3 good ones only)."""
    mixed, clean = tmp_path / "mixed", tmp_path / "clean"
    mixed.mkdir(), clean.mkdir()
    write_image(mixed / "a.jpg", 40, 50)
    write_image(mixed / "c.png", 30, 60, color=(10, 200, 30))
    (mixed / "e.jpg").write_bytes(rgb_jpeg_bytes(50, 40))
    for name in GOOD:
        shutil.copy(mixed / name, clean / name)
    for name, data in BAD.items():
        (mixed / name).write_bytes(data if data is not None else rgb_jpeg_bytes(64, 64)[:300])
    return mixed, clean


def _predict(checkpoint, source, out, *extra):
    return load_script("predict").main(["--checkpoint", str(checkpoint), "--input", str(source), "--out", str(out),
                                        "--min-score", "0", *extra])


def test_a_folder_with_bad_files_predicts_the_rest(checkpoint, folders, tmp_path, capsys):
    mixed, clean = folders
    assert _predict(checkpoint, mixed, tmp_path / "out_mixed") == 0
    captured = capsys.readouterr()
    err = captured.err.replace("\r", "\n").splitlines()  # the progress bar redraws with \r
    warned = [line for line in err if line.startswith("warning: ")]
    assert sorted(line.split(": ")[1].rsplit("/", 1)[1] for line in warned) == sorted(BAD)
    assert all(line.endswith("; skipped") for line in warned)
    assert err[-1] == "predicted 3 of 6 images, 3 unreadable skipped"
    assert captured.out.strip().endswith("detections.json")

    mixed_dets = json.loads((tmp_path / "out_mixed/detections.json").read_text())
    assert {d["file_name"] for d in mixed_dets} == set(GOOD)
    # One image a batch, so that padding is the same: the good files alone are the reference.
    assert _predict(checkpoint, clean, tmp_path / "out_clean", "--batch-size", "1") == 0
    assert _predict(checkpoint, mixed, tmp_path / "out_mixed1", "--batch-size", "1") == 0
    clean_dets = json.loads((tmp_path / "out_clean/detections.json").read_text())
    assert json.loads((tmp_path / "out_mixed1/detections.json").read_text()) == clean_dets
    assert sorted(p.name for p in (tmp_path / "out_mixed").glob("*.png")) == ["a.jpg.png", "c.png.png", "e.jpg.png"]


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("predict")]
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


def test_strict_makes_a_bad_file_an_error(checkpoint, folders, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _predict(checkpoint, folders[0], tmp_path / "out", "--strict")
    assert exit_info.value.code == 2 and "b.jpg: cannot read image" in _one_error_line(capsys)
    assert not (tmp_path / "out/detections.json").exists()


def test_a_single_bad_file_stays_an_error(checkpoint, folders, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _predict(checkpoint, folders[0] / "d.jpg", tmp_path / "out")
    assert exit_info.value.code == 2 and "d.jpg: " in (line := _one_error_line(capsys)) and "runcated" in line


def test_a_folder_of_only_bad_files_is_an_error(checkpoint, folders, tmp_path, capsys):
    mixed, _ = folders
    for name in GOOD:
        (mixed / name).unlink()
    with pytest.raises(SystemExit) as exit_info:
        _predict(checkpoint, mixed, tmp_path / "out")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"error: {mixed}: none of the 3 images could be read"


def test_an_image_too_thin_to_resize_is_skipped_like_an_unreadable_one(checkpoint, tmp_path, capsys):
    # 3 x 3000 at min_size = max_size = 64: the short side would be 0 px
    folder = tmp_path / "thin"
    folder.mkdir()
    write_image(folder / "a.jpg", 40, 50)
    write_image(folder / "strip.png", 3, 3000)
    assert _predict(checkpoint, folder, tmp_path / "out") == 0
    err = capsys.readouterr().err.replace("\r", "\n").splitlines()
    warned = [line for line in err if line.startswith("warning: ")]
    assert len(warned) == 1 and "strip.png" in warned[0] and "too thin" in warned[0] and warned[0].endswith("; skipped")
    assert {d["file_name"] for d in json.loads((tmp_path / "out/detections.json").read_text())} == {"a.jpg"}
