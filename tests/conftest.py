import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    return Path(os.environ.get("LIT_VAE_DATA_DIR", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if not (path / "MNIST" / "raw").is_dir() or not (path / "FreyFace").is_dir():
        pytest.skip(f"the data sets are not in {path}; set LIT_VAE_DATA_DIR (see the README)")
    return path
