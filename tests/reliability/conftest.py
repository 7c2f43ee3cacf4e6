import pytest
import torch

from tests.conftest import write_tiny_synthetic


@pytest.fixture(autouse=True)
def one_thread():
    """One compute thread in these tests, and in their subprocesses (helpers.script_env).

    On the 2 shared cores of CI, 2 OpenMP threads per process next to other busy processes make
    a tiny training step many times slower (spin-waiting; docs/benchmarks.md); the resume test also needs the same thread
    count in every process it compares (the order of float sums).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def odd_synthetic(tmp_path_factory):
    """16 training and 7 (odd) validation images, 128 px: a 2-process sampler must pad validation."""
    return write_tiny_synthetic(tmp_path_factory.mktemp("synthetic_odd"), num_train=16, num_val=7, seed=1)

