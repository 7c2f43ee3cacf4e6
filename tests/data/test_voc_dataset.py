"""VOCDetection: the -1 convention, difficult boxes, subsets, custom classes and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from detector.data import VOC_CLASSES, DatasetError, DatasetWarning, VOCDetection
from tests.data.fixtures import make_voc, write_image

IMAGES = {
    "000001": {"size": (50, 60), "objects": [("dog", (1, 1, 10, 20)), ("person", (5, 6, 30, 40), 1)]},
    "000002": {"size": (40, 40), "objects": [("cat", (2, 3, 12, 13))]},
    "000003": {"size": (40, 40), "objects": [("car", (2, 3, 12, 13))]},
}


@pytest.fixture
def devkit(tmp_path):
    return make_voc(tmp_path, IMAGES, {"trainval": list(IMAGES), "test": ["000002"]})


def test_voc_minus_one_convention_and_item_contract(devkit):
    ds = VOCDetection(devkit, "2007", "trainval")
    assert ds.class_names == list(VOC_CLASSES) and ds.num_classes == 20
    assert ds.label_to_category_id == list(range(1, 21))
    item = ds[0]
    np.testing.assert_array_equal(item["boxes"], [[0, 0, 10, 20]])  # (xmin-1, ymin-1, xmax, ymax)
    assert item["labels"].tolist() == [VOC_CLASSES.index("dog")]
    assert item["image_id"] == 1 and item["orig_size"] == (50, 60)
    assert item["image"].shape == (50, 60, 3) and item["image"].dtype == np.uint8


def test_difficult_dropped_from_targets_and_iscrowd_in_gt(devkit):
    ds = VOCDetection(devkit, "2007", "trainval")
    assert VOC_CLASSES.index("person") not in ds[0]["labels"].tolist()
    gt = ds.coco_gt()
    anns = gt.loadAnns(gt.getAnnIds(imgIds=[1]))
    by_cat = {a["category_id"]: a for a in anns}
    person = by_cat[VOC_CLASSES.index("person") + 1]
    assert person["iscrowd"] == 1
    assert person["bbox"] == [4, 5, 26, 35] and person["area"] == 26 * 35
    assert by_cat[VOC_CLASSES.index("dog") + 1]["iscrowd"] == 0
    assert gt.imgs[1]["file_name"] == "000001.jpg"


def test_drop_empty_counts_difficult_as_empty(tmp_path):
    images = {
        "000001": {"size": (20, 20), "objects": [("dog", (1, 1, 10, 10), 1)]},
        "000002": {"size": (20, 20), "objects": [("dog", (1, 1, 10, 10))]},
        "000003": {"size": (20, 20), "objects": []},
    }
    devkit = make_voc(tmp_path, images, {"train": list(images)})
    assert len(VOCDetection(devkit, "2007", "train")) == 3
    assert VOCDetection(devkit, "2007", "train", drop_empty=True).image_ids.tolist() == [2]


def _many_images():
    images = {}
    names = ["dog", "cat", "car", "person"]
    for k in range(30):
        a, b = names[k % 4], names[(k // 4) % 4]
        images[f"{k:06d}"] = {"size": (16, 16), "objects": [(a, (1, 1, 8, 8)), (b, (5, 5, 16, 16))]}
    return images


def test_subset_selection_deterministic_by_seed(tmp_path):
    devkit = make_voc(tmp_path, _many_images(), {"trainval": list(_many_images())})

    def pick(seed, max_images=4):
        return VOCDetection(devkit, "2007", "trainval", subset_classes=["cat", "dog"], max_images=max_images, seed=seed)

    first, again, other = pick(0), pick(0), pick(1)
    assert first.image_ids.tolist() == again.image_ids.tolist()
    assert len(first) == 4 and first.image_ids.tolist() != other.image_ids.tolist()
    assert first.class_names == ["cat", "dog"] and first.label_to_category_id == [1, 2]
    everything = pick(0, max_images=None)
    expected = [int(i) for i, spec in _many_images().items() if {o[0] for o in spec["objects"]} & {"cat", "dog"}]
    assert everything.image_ids.tolist() == expected
    for ds in (first, everything):
        for i in range(len(ds)):
            assert set(ds[i]["labels"].tolist()) <= {0, 1} and len(ds[i]["labels"]) >= 1
    cats = [a["category_id"] for a in everything.coco_gt().dataset["annotations"]]
    assert set(cats) == {1, 2}


def test_subset_of_unknown_class_is_an_error(devkit):
    with pytest.raises(DatasetError, match="subset classes"):
        VOCDetection(devkit, "2007", "trainval", subset_classes=["unicorn"])


def test_custom_class_list(tmp_path):
    images = {"img_a": {"size": (30, 30), "objects": [("gadget", (3, 3, 9, 9)), ("widget", (10, 10, 20, 20))]}}
    devkit = make_voc(tmp_path, images, {"train": ["img_a"]})
    ds = VOCDetection(devkit, "2007", "train", classes=["widget", "gadget"])
    assert ds.class_names == ["widget", "gadget"] and ds.num_classes == 2
    assert ds[0]["labels"].tolist() == [1, 0]
    assert ds[0]["image_id"] == 0  # not a VOC-style number: the line in the image-set file
    with pytest.raises(DatasetError, match="unknown class 'gadget'") as err:
        VOCDetection(devkit, "2007", "train", classes=["widget"])
    assert str(devkit / "VOC2007" / "Annotations" / "img_a.xml") in str(err.value)


def test_year_none_reads_the_folder_itself(tmp_path):
    make_voc(tmp_path, IMAGES, {"val": ["000003"]})
    ds = VOCDetection(tmp_path / "VOCdevkit" / "VOC2007", None, "val")
    assert ds.image_ids.tolist() == [3]


def test_voc2012_style_ids(tmp_path):
    images = {"2008_000123": {"size": (20, 20), "objects": [("dog", (1, 1, 10, 10))]}}
    devkit = make_voc(tmp_path, images, {"train": list(images)}, year="2012")
    assert VOCDetection(devkit, "2012", "train").image_ids.tolist() == [2008000123]


def test_missing_size_read_from_image_header(tmp_path):
    images = {"000001": {"size": (33, 44), "xml_size": None, "objects": [("dog", (1, 1, 10, 10))]}}
    devkit = make_voc(tmp_path, images, {"train": ["000001"]})
    ds = VOCDetection(devkit, "2007", "train")
    assert ds[0]["orig_size"] == (33, 44)
    assert ds.coco_gt().imgs[1]["width"] == 44


def test_bad_boxes_counted(tmp_path):
    images = {
        "000001": {
            "size": (20, 20),
            "objects": [
                ("dog", (5, 5, 4, 10)),  # xmax < xmin
                ("dog", (1, 1, 30, 10)),  # reaches past the right edge
                ("dog", (25, 25, 30, 30)),  # entirely outside
                ("cat", (2, 2, 5, 5)),
            ],
        }
    }
    devkit = make_voc(tmp_path, images, {"train": ["000001"]})
    with pytest.warns(DatasetWarning, match="train.txt") as record:
        ds = VOCDetection(devkit, "2007", "train")
    assert len(record) == 1
    text = str(record[0].message)
    assert "1 x box of zero or negative size" in text and "1 x box outside its image" in text
    assert "1 x box partly outside its image (clipped)" in text
    np.testing.assert_array_equal(ds[0]["boxes"], [[0, 0, 20, 10], [1, 1, 5, 5]])


def test_malformed_xml_names_the_file(devkit):
    xml = devkit / "VOC2007" / "Annotations" / "000002.xml"
    xml.write_text("<annotation><object><name>dog</name>")
    with pytest.raises(DatasetError, match="malformed XML") as err:
        VOCDetection(devkit, "2007", "trainval")
    assert str(xml) in str(err.value)


def test_missing_bndbox_field_names_the_file(devkit):
    xml = devkit / "VOC2007" / "Annotations" / "000002.xml"
    xml.write_text("<annotation><object><name>dog</name><bndbox><xmin>1</xmin></bndbox></object></annotation>")
    with pytest.raises(DatasetError, match="missing <ymin>") as err:
        VOCDetection(devkit, "2007", "trainval")
    assert str(xml) in str(err.value)


def test_missing_image_set_and_folder(devkit, tmp_path):
    with pytest.raises(DatasetError, match="image-set file not found") as err:
        VOCDetection(devkit, "2007", "val")
    assert str(devkit / "VOC2007" / "ImageSets" / "Main" / "val.txt") in str(err.value)
    with pytest.raises(DatasetError, match="VOC folder not found") as err:
        VOCDetection(devkit, "2012", "train")
    assert "VOC2012" in str(err.value)


def test_missing_annotation_and_image_files(devkit):
    (devkit / "VOC2007" / "Annotations" / "000003.xml").unlink()
    with pytest.raises(DatasetError, match="annotation file not found") as err:
        VOCDetection(devkit, "2007", "trainval")
    assert "000003.xml" in str(err.value)
    (devkit / "VOC2007" / "JPEGImages" / "000002.jpg").unlink()
    ds = VOCDetection(devkit, "2007", "test")
    with pytest.raises(DatasetError, match="image file not found") as err:
        ds[0]
    assert "000002.jpg" in str(err.value)


def test_image_id_escaping_the_folder_is_refused(devkit, tmp_path):
    write_image(tmp_path / "evil.jpg", 5, 5)
    (devkit / "VOC2007" / "ImageSets" / "Main" / "evil.txt").write_text("../../../evil\n")
    with pytest.raises(DatasetError, match="escapes") as err:
        VOCDetection(devkit, "2007", "evil")
    assert "evil.txt" in str(err.value)
