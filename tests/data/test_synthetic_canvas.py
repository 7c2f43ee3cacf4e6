"""The synthetic canvas knob: canvas c is canvas 1's image at the top left of a c x larger plain square."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from detector.data import SyntheticRenderer, SyntheticSpec, make_synthetic
from detector.data.synthetic import image_rng
from tests.data.test_data_scripts import _run

SIDE = 64  # small images keep the test quick; a multiple of 16 (the JPEG chroma block)
KNOBS = dict(image_size=SIDE, min_object_size=6, max_object_size=20, mean_objects=4, max_objects=10)


def _gradient_midpoint(seed: int, split: str, index: int) -> np.ndarray:
    """(3,) the midpoint of the image's two background colours: the first draw of its Generator."""
    c0, c1 = image_rng(seed, split, index).uniform(0, 255, size=(2, 3))
    return (c0 + c1) / 2


@pytest.mark.parametrize("canvas", [2, 3])
def test_rendered_canvas_holds_canvas_one_at_the_top_left(canvas):
    one = SyntheticRenderer(SyntheticSpec(**KNOBS), seed=0)
    big = SyntheticRenderer(SyntheticSpec(**KNOBS, canvas=canvas), seed=0)
    objects = 0
    for split in ("train", "val"):
        for index in range(8):
            image, boxes, labels, instances = one.render(image_rng(0, split, index), instances=True)
            image_c, boxes_c, labels_c, instances_c = big.render(image_rng(0, split, index), instances=True)
            assert image_c.shape == (canvas * SIDE, canvas * SIDE, 3) and image_c.dtype == np.uint8
            assert image_c[:SIDE, :SIDE].tobytes() == image.tobytes()
            np.testing.assert_array_equal(boxes_c, boxes)  # the top left: an offset of (0, 0)
            np.testing.assert_array_equal(labels_c, labels)
            np.testing.assert_array_equal(instances_c[:SIDE, :SIDE], instances)
            pad = np.ones(image_c.shape[:2], bool)
            pad[:SIDE, :SIDE] = False
            assert not instances_c[pad].any()
            colours = np.unique(image_c[pad], axis=0)
            assert len(colours) == 1  # one plain colour
            assert np.abs(colours[0] - _gradient_midpoint(0, split, index)).max() <= 0.5 + 1e-3
            objects += len(labels)
    assert objects > 20


def test_written_canvas_splits_match_canvas_one(tmp_path):
    stats = {c: make_synthetic(tmp_path / f"c{c}", num_train=5, num_val=3, seed=0, canvas=c, **KNOBS)
             for c in (1, 2, 3)}
    for split, n in (("train", 5), ("val", 3)):
        ref = json.loads((tmp_path / "c1" / f"{split}.json").read_text())
        for c in (2, 3):
            assert stats[c][split]["boxes"] == stats[1][split]["boxes"]
            data = json.loads((tmp_path / f"c{c}" / f"{split}.json").read_text())
            assert data["info"]["spec"]["canvas"] == c
            assert data["annotations"] == ref["annotations"]  # boxes, labels, ids, areas unchanged
            assert data["categories"] == ref["categories"]
            assert [(im["id"], im["file_name"]) for im in data["images"]] == [
                (im["id"], im["file_name"]) for im in ref["images"]]
            assert {(im["width"], im["height"]) for im in data["images"]} == {(c * SIDE, c * SIDE)}
            for i in range(n):
                a = np.asarray(Image.open(tmp_path / "c1" / "images" / split / f"{i:06d}.jpg"), dtype=np.int16)
                b = np.asarray(Image.open(tmp_path / f"c{c}" / "images" / split / f"{i:06d}.jpg"), dtype=np.int16)
                assert b.shape == (c * SIDE, c * SIDE, 3)
                # the JPEG decoder's chroma upsampling reads one sample beyond the image's last
                # row and column (the pad here, a copy of the edge at canvas 1): all else is equal
                assert b[: SIDE - 1, : SIDE - 1].tobytes() == a[: SIDE - 1, : SIDE - 1].tobytes()
                assert np.abs(b[SIDE + 8 :, :] - _gradient_midpoint(0, split, i)).max() <= 2


def test_canvas_flag_of_the_script(tmp_path):
    out = tmp_path / "syn"
    result = _run("scripts/make_synthetic.py", "--out", str(out), "--num-train", "2", "--num-val", "1",
                  "--image-size", "64", "--max-object-size", "20", "--canvas", "2", "--no-progress")
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "val.json").read_text())
    assert data["images"][0]["width"] == data["images"][0]["height"] == 128
    assert Image.open(out / "images" / "val" / "000000.jpg").size == (128, 128)
    bad = _run("scripts/make_synthetic.py", "--out", str(tmp_path / "bad"), "--canvas", "0", "--no-progress")
    assert bad.returncode == 2 and "canvas" in bad.stderr


def test_canvas_is_validated():
    with pytest.raises(ValueError, match="canvas"):
        SyntheticSpec(canvas=0)
