"""Small COCO ground-truth / results builders shared by the evaluation tests."""

from __future__ import annotations

import numpy as np
import pytest


def make_gt(annotations, *, images=(1,), categories=((1, "thing"),)):
    """A COCO instances dict; annotations are (image_id, category_id, [x, y, w, h]) or with iscrowd."""
    anns = []
    for i, a in enumerate(annotations, start=1):
        image_id, category_id, bbox = a[:3]
        crowd = a[3] if len(a) > 3 else 0
        anns.append({
            "id": i, "image_id": image_id, "category_id": category_id, "bbox": list(bbox),
            "area": float(bbox[2] * bbox[3]), "iscrowd": crowd,
        })
    return {
        "images": [{"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in images],
        "annotations": anns,
        "categories": [{"id": c, "name": n} for c, n in categories],
    }


def det(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": list(bbox), "score": score}


@pytest.fixture
def gt_builder():
    return make_gt


@pytest.fixture
def synthetic_gt_dt():
    """A seeded random GT/results pair: 40 images, 3 categories (ids 1, 4, 9), boxes of every
    area range, a few crowd boxes, jittered true positives, wrong labels, random false
    positives and tied scores."""
    rng = np.random.default_rng(0)
    cat_ids = [1, 4, 9]
    gt_anns, results = [], []
    for image_id in range(1, 41):
        for _ in range(rng.integers(0, 7)):
            w, h = np.exp(rng.uniform(np.log(6), np.log(300), size=2))
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            cat = int(rng.choice(cat_ids))
            crowd = int(rng.random() < 0.05)
            gt_anns.append((image_id, cat, [float(x), float(y), float(w), float(h)], crowd))
            if rng.random() < 0.8:
                jitter = rng.normal(0, 0.08, size=4) * [w, h, w, h]
                box = [x + jitter[0], y + jitter[1], max(w + jitter[2], 1.0), max(h + jitter[3], 1.0)]
                det_cat = cat if rng.random() < 0.9 else int(rng.choice(cat_ids))
                results.append(det(image_id, det_cat, [float(v) for v in box], round(float(rng.random()), 2)))
        for _ in range(rng.integers(0, 5)):
            w, h = np.exp(rng.uniform(np.log(6), np.log(200), size=2))
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            results.append(det(image_id, int(rng.choice(cat_ids)), [float(x), float(y), float(w), float(h)],
                               round(float(rng.random()), 2)))
    gt = make_gt(gt_anns, images=range(1, 41), categories=[(1, "cat"), (4, "dog"), (9, "bird")])
    return gt, results
