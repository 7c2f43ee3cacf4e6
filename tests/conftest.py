"""Fixtures shared by the test packages."""

import pytest

from detector.data.synthetic import make_synthetic


def write_tiny_synthetic(root, *, num_train: int, num_val: int, seed: int = 0):
    """A small synthetic set at 128 px with few, mid-sized objects: quick to train a few steps on."""
    make_synthetic(root, num_train=num_train, num_val=num_val, seed=seed, image_size=128, mean_objects=3,
                   max_objects=5, min_object_size=12, max_object_size=40, num_distractors=1, num_lines=2,
                   num_blobs=2)
    return root


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """16 training and 8 validation images (see write_tiny_synthetic)."""
    return write_tiny_synthetic(tmp_path_factory.mktemp("synthetic"), num_train=16, num_val=8)
