"""COCODetection: label maps, crowd handling, empty images and each bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from detector.data import COCODetection, DatasetError, DatasetWarning
from tests.data.fixtures import coco_json, write_coco, write_image

# Non-contiguous, unsorted category ids, as in COCO (ids 1..90 with gaps).
CATEGORIES = [(7, "dog"), (3, "cat"), (90, "toothbrush")]


def _dataset_dict():
    images = [(11, "a.jpg", 40, 60), (5, "sub/b.jpg", 30, 20), (42, "c.jpg", 32, 32)]
    annotations = [
        {"image_id": 11, "category_id": 7, "bbox": [10, 5, 20, 10]},
        {"image_id": 11, "category_id": 90, "bbox": [0, 0, 60, 40]},
        {"image_id": 11, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 1},
        {"image_id": 5, "category_id": 3, "bbox": [2, 3, 4, 5]},
        {"image_id": 42, "category_id": 7, "bbox": [4, 4, 8, 8], "iscrowd": 1},  # only a crowd box
    ]
    return coco_json(images, annotations, CATEGORIES)


def test_label_map_non_contiguous_ids_round_trip(tmp_path):
    ann_file, image_root = write_coco(tmp_path, _dataset_dict())
    ds = COCODetection(ann_file, image_root)
    assert ds.class_names == ["cat", "dog", "toothbrush"]  # sorted by category id
    assert ds.label_to_category_id == [3, 7, 90]
    assert ds.num_classes == 3
    assert {ds.label_to_category_id[label]: label for label in range(3)} == ds.category_id_to_label

    item = ds[0]  # image 11, boxes in file order, crowd box dropped
    assert item["image_id"] == 11
    assert item["orig_size"] == (40, 60)
    assert item["image"].shape == (40, 60, 3) and item["image"].dtype == np.uint8
    assert item["boxes"].dtype == np.float32 and item["labels"].dtype == np.int64
    np.testing.assert_array_equal(item["boxes"], [[10, 5, 30, 15], [0, 0, 60, 40]])  # XYWH -> XYXY
    np.testing.assert_array_equal(item["labels"], [1, 2])
    assert [ds.label_to_category_id[label] for label in item["labels"]] == [7, 90]

    assert ds[1]["image_id"] == 5 and ds[1]["labels"].tolist() == [0]  # file_name in a sub-folder


def test_crowd_dropped_from_targets_kept_in_gt_and_drop_empty(tmp_path):
    ann_file, image_root = write_coco(tmp_path, _dataset_dict())
    ds = COCODetection(ann_file, image_root)
    assert len(ds) == 3
    assert ds[2]["boxes"].shape == (0, 4) and ds[2]["labels"].shape == (0,)  # crowd only: empty target

    gt = ds.coco_gt()
    crowd = [a for a in gt.loadAnns(gt.getAnnIds()) if a["iscrowd"] == 1]
    assert len(crowd) == 2 and {a["image_id"] for a in crowd} == {11, 42}
    assert sorted(gt.getImgIds()) == [5, 11, 42]

    kept = COCODetection(ann_file, image_root, drop_empty=True)
    assert kept.image_ids.tolist() == [11, 5]
    assert sorted(kept.coco_gt().getImgIds()) == [5, 11]


def test_degenerate_and_outside_boxes_counted_once(tmp_path):
    annotations = [
        {"image_id": 1, "category_id": 3, "bbox": [5, 5, 0, 4]},  # zero width: dropped
        {"image_id": 1, "category_id": 3, "bbox": [5, 5, 4, -2]},  # negative height: dropped
        {"image_id": 1, "category_id": 3, "bbox": [-5, 10, 10, 10]},  # partly outside: clipped
        {"image_id": 1, "category_id": 3, "bbox": [100, 10, 10, 10]},  # fully outside: dropped
        {"image_id": 1, "category_id": 3, "bbox": [2, 2, 6, 6]},  # fine
    ]
    ann_file, image_root = write_coco(tmp_path, coco_json([(1, "a.jpg", 30, 40)], annotations, CATEGORIES))
    with pytest.warns(DatasetWarning) as record:
        ds = COCODetection(ann_file, image_root)
    assert len(record) == 1  # one summary for the dataset, not one per box
    message = str(record[0].message)
    assert str(ann_file) in message
    assert "2 x box of zero or negative size (dropped)" in message
    assert "1 x box outside its image (dropped)" in message
    assert "1 x box partly outside its image (clipped)" in message
    np.testing.assert_array_equal(ds[0]["boxes"], [[0, 10, 5, 20], [2, 2, 8, 8]])


def test_clean_dataset_warns_nothing(tmp_path):
    ann_file, image_root = write_coco(tmp_path, _dataset_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetWarning)
        COCODetection(ann_file, image_root)


def test_unknown_category_names_the_file(tmp_path):
    data = coco_json([(1, "a.jpg", 30, 40)], [{"image_id": 1, "category_id": 4, "bbox": [1, 1, 5, 5]}], CATEGORIES)
    ann_file, image_root = write_coco(tmp_path, data)
    with pytest.raises(DatasetError, match="unknown category_id 4") as err:
        COCODetection(ann_file, image_root)
    assert str(ann_file) in str(err.value) and "a.jpg" in str(err.value)


def test_unknown_image_id_names_the_file(tmp_path):
    data = coco_json([(1, "a.jpg", 30, 40)], [{"image_id": 2, "category_id": 3, "bbox": [1, 1, 5, 5]}], CATEGORIES)
    ann_file, image_root = write_coco(tmp_path, data)
    with pytest.raises(DatasetError, match="unknown image_id 2") as err:
        COCODetection(ann_file, image_root)
    assert str(ann_file) in str(err.value)


@pytest.mark.parametrize("bbox", [[1, 2, 3], [1, 2, "x", 4], None])
def test_malformed_bbox_names_the_file(tmp_path, bbox):
    data = coco_json([(1, "a.jpg", 30, 40)], [], CATEGORIES)
    data["annotations"] = [{"id": 9, "image_id": 1, "category_id": 3, "bbox": bbox}]
    ann_file, image_root = write_coco(tmp_path, data)
    with pytest.raises(DatasetError, match="bbox") as err:
        COCODetection(ann_file, image_root)
    assert str(ann_file) in str(err.value)


def test_malformed_and_missing_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [1, 2,')
    with pytest.raises(DatasetError, match="malformed JSON") as err:
        COCODetection(bad, tmp_path)
    assert str(bad) in str(err.value)
    with pytest.raises(DatasetError, match="not found"):
        COCODetection(tmp_path / "missing.json", tmp_path)
    no_categories = tmp_path / "nocat.json"
    no_categories.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DatasetError, match="categories") as err:
        COCODetection(no_categories, tmp_path)
    assert str(no_categories) in str(err.value)


@pytest.mark.parametrize("file_name", ["../outside.jpg", "sub/../../outside.jpg", "/etc/passwd"])
def test_file_name_escaping_root_is_refused(tmp_path, file_name):
    write_image(tmp_path / "outside.jpg", 10, 10)
    data = coco_json([(1, file_name, 10, 10)], [], CATEGORIES)
    ann_file, _ = write_coco(tmp_path / "ds", data)
    with pytest.raises(DatasetError, match="escapes the image root") as err:
        COCODetection(ann_file, tmp_path / "ds" / "images")
    assert str(ann_file) in str(err.value)


def test_missing_image_names_the_file(tmp_path):
    ann_file, image_root = write_coco(tmp_path, _dataset_dict())
    (image_root / "sub" / "b.jpg").unlink()
    ds = COCODetection(ann_file, image_root)  # indexing does not open images
    with pytest.raises(DatasetError, match="not found") as err:
        ds[1]
    assert str(image_root / "sub" / "b.jpg") in str(err.value)


def test_declared_size_mismatch_names_the_file(tmp_path):
    ann_file, image_root = write_coco(tmp_path, _dataset_dict(), image_size=(41, 60))
    with pytest.raises(DatasetError, match="declares 40x60") as err:
        COCODetection(ann_file, image_root)[0]
    assert "a.jpg" in str(err.value)


def test_missing_width_height_read_from_header(tmp_path):
    data = coco_json([(1, "a.jpg", 30, 40)], [{"image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5]}], CATEGORIES)
    ann_file, image_root = write_coco(tmp_path, data)
    del data["images"][0]["height"], data["images"][0]["width"]
    ann_file.write_text(json.dumps(data))
    ds = COCODetection(ann_file, image_root)
    assert ds[0]["orig_size"] == (30, 40)
    assert ds.coco_gt().imgs[1]["height"] == 30


def test_max_images_is_deterministic_by_seed(tmp_path):
    images = [(i, f"{i}.jpg", 8, 8) for i in range(1, 21)]
    ann_file, image_root = write_coco(tmp_path, coco_json(images, [], CATEGORIES))
    first = COCODetection(ann_file, image_root, max_images=5, seed=3).image_ids.tolist()
    again = COCODetection(ann_file, image_root, max_images=5, seed=3).image_ids.tolist()
    other = COCODetection(ann_file, image_root, max_images=5, seed=4).image_ids.tolist()
    assert first == again and len(first) == 5 and first == sorted(first)
    assert first != other


def test_image_info_file_without_annotations(tmp_path):
    data = coco_json([(1, "a.jpg", 30, 40)], [], CATEGORIES)
    del data["annotations"]
    ann_file, image_root = write_coco(tmp_path, data)
    ds = COCODetection(ann_file, image_root)
    assert len(ds) == 1 and ds[0]["boxes"].shape == (0, 4)
