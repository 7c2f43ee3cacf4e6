"""Fixtures shared by the test packages, and the hypothesis profiles of the fuzz tests.

Profiles: "ci" (loaded by default: a bounded, derandomized example count, so CI is quick and
repeatable) and "long" (`pytest --hypothesis-profile long tests/reliability/test_fuzz.py`: random,
at least 2,000 examples per parser). Both have a per-example deadline: a parser that hangs fails.
"""

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, settings

from detector.data.synthetic import make_synthetic

_FUZZ = dict(deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
             print_blob=True)
settings.register_profile("ci", max_examples=60, derandomize=True, database=None, **_FUZZ)
settings.register_profile("long", max_examples=2000, **_FUZZ)
settings.load_profile("ci")  # --hypothesis-profile NAME loads another after this


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
