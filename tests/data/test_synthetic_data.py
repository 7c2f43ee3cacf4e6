"""The synthetic dataset: tight boxes, class mix, determinism, and COCO files pycocotools reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from detector.data import SYNTHETIC_CLASSES, COCODetection, SyntheticRenderer, SyntheticSpec, make_synthetic
from detector.data.synthetic import CLASS_FREQUENCIES, image_rng

CLEAN = SyntheticSpec(noise_std=0, num_distractors=0, num_lines=0, num_blobs=0)


def test_boxes_are_tight_and_objects_do_not_overlap():
    renderer = SyntheticRenderer(CLEAN, seed=0)
    seen = 0
    for index in range(10):
        image, boxes, labels, instances = renderer.render(image_rng(0, "train", index), instances=True)
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8
        assert len(boxes) == len(labels) == instances.max()
        for k, box in enumerate(boxes.astype(int)):
            ys, xs = np.nonzero(instances == k + 1)
            # The box is the exact pixel extent: (x0, y0, x1 + 1, y1 + 1).
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(box)
            x0, y0, x1, y1 = box
            ring = np.zeros((256, 256), bool)
            ring[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = True
            ring[y0:y1, x0:x1] = False
            assert not instances[ring].any()  # nothing of any object just outside the box
            colors = image[instances == k + 1]
            assert (colors == colors[0]).all()  # one flat colour, no occlusion
            assert np.abs(colors[0].astype(int) - image[ring].mean(axis=0)).sum() > 60  # visible
            seen += 1
    assert seen > 40


def test_statistics_of_the_default_spec():
    renderer = SyntheticRenderer(SyntheticSpec(), seed=0)
    counts, sizes, empty = np.zeros(len(SYNTHETIC_CLASSES)), [], 0
    n = 150
    for index in range(n):
        _, boxes, labels = renderer.render(image_rng(0, "train", index))
        counts += np.bincount(labels, minlength=len(SYNTHETIC_CLASSES))
        sizes.extend(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).tolist())
        empty += len(labels) == 0
    assert 6.0 < counts.sum() / n < 9.0
    assert np.all(np.diff(counts) < 0)  # frequencies follow 40/25/15/12/8 %
    np.testing.assert_allclose(counts / counts.sum(), CLASS_FREQUENCIES, atol=0.05)
    assert 2 <= empty <= 20
    assert 4 <= min(sizes) and max(sizes) <= 48


def test_written_splits_load_with_pycocotools_and_are_deterministic(tmp_path):
    make_synthetic(tmp_path / "a", num_train=6, num_val=3, seed=0)
    make_synthetic(tmp_path / "b", num_train=6, num_val=3, seed=0)
    make_synthetic(tmp_path / "c", num_train=6, num_val=3, seed=1)
    for split, n in (("train", 6), ("val", 3)):
        gt = COCO(str(tmp_path / "a" / f"{split}.json"))
        assert len(gt.getImgIds()) == n
        assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == list(SYNTHETIC_CLASSES)
        assert gt.imgs[1]["file_name"] == f"{split}/000000.jpg"
        assert (tmp_path / "a" / "images" / split / "000000.jpg").is_file()
        for name in ("a", "b"):
            assert (tmp_path / name / "images" / split / f"{n - 1:06d}.jpg").is_file()
        same = [(tmp_path / x / f"{split}.json").read_text() for x in ("a", "b")]
        assert same[0] == same[1]
        for i in range(n):
            rel = f"images/{split}/{i:06d}.jpg"
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert (tmp_path / "a" / "train.json").read_text() != (tmp_path / "c" / "train.json").read_text()

    ds = COCODetection(tmp_path / "a" / "val.json", tmp_path / "a" / "images")
    data = json.loads((tmp_path / "a" / "val.json").read_text())
    assert len(ds) == 3 and sum(len(ds[i]["labels"]) for i in range(3)) == len(data["annotations"])


def test_knobs_are_validated():
    with pytest.raises(ValueError):
        SyntheticSpec(min_object_size=50, max_object_size=40)
    with pytest.raises(ValueError):
        SyntheticSpec(empty_fraction=1.5)
