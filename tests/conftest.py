"""Fixtures of the whole suite: the data sets, and one torch thread per test process."""

from pathlib import Path

import pytest
import torch

from tests.helpers import shared_data_dir


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One torch thread: in-process tests then take the same time on a loaded 2-core machine as
    on a quiet one (an MCEM test took 287 s with the default threads while another job ran, and
    5.7 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if not (path / "MNIST" / "raw").is_dir() or not (path / "FreyFace").is_dir():
        pytest.skip(f"the data sets are not in {path}; set LIT_VAE_DATA_DIR (see the README)")
    return path
