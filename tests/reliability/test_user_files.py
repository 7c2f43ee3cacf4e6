"""predict never loses or changes what the user gave: input files, results already computed, memory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import detector
from tests.data.fixtures import load_script, write_image

from .helpers import REPO, script_env


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = detector.build_retinanet(num_classes=3, backbone="resnet18", fpn_channels=16, head_convs=1,
                                     min_size=64, max_size=64, prior_prob=0.3)
    return detector.save_detector(model, tmp_path_factory.mktemp("ckpt") / "m.ckpt",
                                  class_names=["a", "b", "c"])


def _noisy(path, h, w, seed=0):
    """An image of random pixels (the untrained model then finds something in it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _predict(checkpoint, source, out, *extra):
    return load_script("predict").main(["--checkpoint", str(checkpoint), "--input", str(source), "--out", str(out),
                                        "--min-score", "0", *extra])


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.startswith("error: ")]


def test_predict_into_the_input_folder_keeps_every_input_and_one_drawing_per_file(checkpoint, tmp_path):
    folder = tmp_path / "photos"
    for i, name in enumerate(["holiday.png", "scan.jpg", "scan.png"]):
        _noisy(folder / name, 48, 40 + 8 * i, seed=i)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert _predict(checkpoint, folder, folder) == 0
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert {k: after[k] for k in before} == before  # every input byte for byte
    assert sorted(set(after) - set(before)) == ["detections.json", "holiday.png.png", "scan.jpg.png", "scan.png.png"]
    # each drawing is its own image's: the size of the file it was drawn on
    for name in before:
        assert Image.open(folder / f"{name}.png").size == Image.open(folder / name).size


def test_a_run_whose_drawing_would_replace_an_input_is_refused_before_any_work(checkpoint, tmp_path, capsys):
    folder = tmp_path / "photos"
    _noisy(folder / "a.png", 40, 40)
    _noisy(folder / "a.png.png", 40, 40, seed=1)  # the drawing name of a.png
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(SystemExit) as exit_info:
        _predict(checkpoint, folder, folder)
    assert exit_info.value.code == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and "a.png.png: is an input image and would be overwritten" in lines[0], lines
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_results_already_predicted_are_kept_when_a_later_image_fails(checkpoint, tmp_path, capsys):
    folder, alone = tmp_path / "in", tmp_path / "alone"
    for i, name in enumerate(["a.png", "b.png", "c.png"]):
        _noisy(folder / name, 48, 48, seed=i)
    alone.mkdir()
    shutil.copy(folder / "a.png", alone / "a.png")
    out = tmp_path / "out"
    (out / "b.png.png").mkdir(parents=True)  # the second drawing cannot be written: a folder holds its name
    with pytest.raises(SystemExit) as exit_info:
        _predict(checkpoint, folder, out, "--batch-size", "1")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {out / 'b.png.png'}: cannot write: Is a directory" in err.splitlines()
    assert "stopped after 2 of 3 images" in err  # a and b predicted, b's drawing failed
    kept = json.loads((out / "detections.json").read_text())
    assert _predict(checkpoint, alone, tmp_path / "ref") == 0
    reference = json.loads((tmp_path / "ref/detections.json").read_text())
    assert reference and [d for d in kept if d["file_name"] == "a.png"] == reference


def test_an_image_the_model_cannot_take_is_skipped_and_the_rest_written(checkpoint, tmp_path, capsys):
    folder, clean = tmp_path / "in", tmp_path / "clean"
    for i, name in enumerate(["a.png", "c.png"]):
        _noisy(folder / name, 48, 56, seed=i)
        _noisy(clean / name, 48, 56, seed=i)
    write_image(folder / "b.png", 3, 3000)  # 3 x 3000: too thin to resize to the model's size
    assert _predict(checkpoint, folder, tmp_path / "out", "--batch-size", "4") == 0
    err = capsys.readouterr().err.replace("\r", "\n")
    warned = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and "b.png" in warned[0] and warned[0].endswith("; skipped"), warned
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["a.png.png", "c.png.png"]
    # the others were predicted one by one: the same detections as a folder of them alone, batch 1
    assert _predict(checkpoint, clean, tmp_path / "ref", "--batch-size", "1") == 0
    assert json.loads((tmp_path / "out/detections.json").read_text()) == \
        json.loads((tmp_path / "ref/detections.json").read_text())


@pytest.mark.parametrize("flag,value", [("--batch-size", "0"), ("--batch-size", "-1"), ("--min-score", "2"),
                                        ("--min-score", "nan"), ("--min-score", "-0.1")])
def test_predict_range_checks_its_numbers(checkpoint, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        _predict(checkpoint, tmp_path, tmp_path / "out", flag, value)  # "--min-score 0" first, this one wins
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"argument {flag}: {value!r} is not" in err[-1], err


def test_a_checkpoint_with_fewer_class_names_than_classes_is_one_line_at_load(tmp_path, capsys):
    model = detector.build_retinanet(num_classes=3, backbone="resnet18", fpn_channels=16, head_convs=1,
                                     min_size=64, max_size=64)
    short = detector.save_detector(model, tmp_path / "short.ckpt", class_names=["cat"])
    _noisy(tmp_path / "in/a.png", 40, 40)
    with pytest.raises(SystemExit):
        _predict(short, tmp_path / "in", tmp_path / "out")
    assert _error_lines(capsys) == [f"error: {short}: 1 class names for a model of 3 classes"]
    assert not (tmp_path / "out").exists()


# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork + exec, so a child of a large
# pytest process would report the parent's size
MEASURE = """
import re, sys
sys.argv = ["predict.py", *sys.argv[1:]]
sys.path.insert(0, "scripts")
import predict
predict.main(sys.argv[1:])
hwm_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print("peak_mb", hwm_kb // 1024)
"""


@pytest.mark.slow
def test_a_12000_px_png_is_resized_before_it_becomes_float(checkpoint, tmp_path):
    big = tmp_path / "in/big.png"
    big.parent.mkdir()
    Image.new("RGB", (12000, 12000), (90, 120, 150)).save(big, compress_level=1)
    done = subprocess.run([sys.executable, "-c", MEASURE, "--checkpoint", str(checkpoint), "--input", str(big.parent),
                           "--out", str(tmp_path / "out"), "--no-images"], cwd=REPO, env=script_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    peak = int(done.stdout.split("peak_mb")[1])
    # the decode (Pillow's image, its bytes and the uint8 array) peaks near 2.9 GB with the interpreter;
    # converting the full image to float would add 1.7 GB a copy, and normalising it another
    assert peak < 4000, peak
