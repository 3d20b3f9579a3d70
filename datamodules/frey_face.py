"""The Frey Face data set (Section 5): 1,965 face images of 28 x 20 pixels."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.io
import torch
from torch import Tensor
from torchvision.datasets.utils import download_url

from lit_vae.datamodules.base import InMemoryDataModule
from lit_vae.datamodules.files import CorruptDataError, default_data_dir, download_verified, missing_files_error

URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
FILENAME = "frey_rawface.mat"
#: SHA-256 of the pixels, ``np.ascontiguousarray(ff.T).tobytes()``; re-written ``.mat``
#: containers of the same pixels have other file checksums, so the pixels are what is checked.
PIXELS_SHA256 = "2438ba4f0d2a6bd8bac43de756141eaa33c8d248dd613d464bdb1210d9b7af78"
NUM_IMAGES = 1965
_HINT = f"Expected <data_dir>/FreyFace/{FILENAME}, the MATLAB file of {URL} (variable ff, uint8, 560 x 1965)."


class FreyFaceDataModule(InMemoryDataModule):
    """Frey Face, 28 rows x 20 columns flattened to 560 values, pixels / 256 (in [0, 1)).

    The split is a fixed shuffle of the images in file order (the columns of ``ff``); its first
    ``train_size`` (1,600) images train, the remaining 365 test. ``split="numpy_shuffle"`` (the
    default) is the paper's: ``np.random.seed(split_seed); np.random.shuffle(images)`` with numpy's
    legacy global generator, as Kingma's code of the time splits it (seed 0). On it, a decoder that
    ignores z scores the flat wake-sleep curve of Figure 2. ``split="torch_randperm"`` is this
    project's earlier split, ``torch.randperm(1965)`` seeded by ``split_seed``. There is no
    validation split.

    Args:
        data_dir: folder holding ``FreyFace/frey_rawface.mat`` (default ``$LIT_VAE_DATA_DIR``,
            else ``data/``). A missing file is downloaded there, its pixels checked, when the
            network allows.
        train_size: images in the training split; the rest are the test split.
        batch_size: M, the training minibatch size (the paper: 100).
        eval_batch_size: minibatch size for evaluation.
        seed: seed of the data order; by default drawn from the global RNG (``seed_everything``).
        split: how the images are shuffled before the split: ``numpy_shuffle`` (the paper's)
            or ``torch_randperm`` (this project's before 0.3).
        split_seed: seed of the train/test shuffle.
        download: try to download a missing file.
        predict_split: the split ``predict`` serves.
    """

    image_shape = (28, 20)

    def __init__(
        self,
        data_dir: str | None = None,
        train_size: int = 1_600,
        batch_size: int = 100,
        eval_batch_size: int = 1_000,
        seed: int | None = None,
        split: Literal["numpy_shuffle", "torch_randperm"] = "numpy_shuffle",
        split_seed: int = 0,
        download: bool = True,
        predict_split: Literal["train", "test"] = "test",
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed, predict_split)
        if not 1 <= train_size < NUM_IMAGES:
            raise ValueError(f"train_size must be between 1 and {NUM_IMAGES - 1}, got {train_size}")
        self.data_dir = default_data_dir(data_dir)
        self.train_size = train_size
        self.split = split
        self.split_seed = split_seed
        self.download = download

    @property
    def path(self) -> Path:
        return self.data_dir / "FreyFace" / FILENAME

    def prepare_data(self) -> None:
        if self.path.exists():
            return
        folder = self.path.parent
        if not self.download:
            raise missing_files_error("Frey Face", folder, [FILENAME], "download=False", _HINT)
        try:
            download_verified(folder, lambda tmp: download_url(URL, str(tmp), FILENAME), [FILENAME], read_pixels)
        except OSError as error:
            raise missing_files_error("Frey Face", folder, [FILENAME], f"{type(error).__name__}: {error}", _HINT) from error

    def load_splits(self) -> dict[str, Tensor]:
        self.prepare_data()
        images = torch.from_numpy(read_pixels(self.path)).float().div_(256.0)
        order = split_order(self.split, self.split_seed)
        return {"train": images[order[: self.train_size]], "test": images[order[self.train_size :]]}


def split_order(split: str, seed: int) -> Tensor:
    """The permutation of the 1,965 images (file order) that ``split`` with ``seed`` gives."""
    if split == "numpy_shuffle":
        # np.random.seed(seed); np.random.shuffle(images) permutes the images as it permutes
        # their indices: the legacy global generator's draws depend only on the length.
        state = np.random.RandomState(seed)
        indices = np.arange(NUM_IMAGES)
        state.shuffle(indices)
        return torch.from_numpy(indices)
    if split == "torch_randperm":
        return torch.randperm(NUM_IMAGES, generator=torch.Generator().manual_seed(seed))
    raise ValueError(f"split must be numpy_shuffle or torch_randperm, got {split!r}")


def read_pixels(path: Path) -> np.ndarray:
    """The ``[1965, 560]`` uint8 images of ``path``, after checking their SHA-256."""
    try:
        ff = scipy.io.loadmat(str(path))["ff"]
    except Exception as error:  # scipy raises ValueError, TypeError, KeyError... on a damaged file
        raise CorruptDataError(
            f"{path} could not be read as the Frey Face MATLAB file ({type(error).__name__}: {error}). "
            f"Nothing was loaded. Delete it so that it can be downloaded again, or replace it. {_HINT}"
        ) from error
    pixels = np.ascontiguousarray(ff.T)
    actual = hashlib.sha256(pixels.tobytes()).hexdigest()
    if pixels.dtype != np.uint8 or actual != PIXELS_SHA256:
        raise CorruptDataError(
            f"{path} does not hold the Frey Face pixels: their SHA-256 is {actual}, expected {PIXELS_SHA256}. "
            f"Nothing was loaded. Delete it so that it can be downloaded again, or replace it. {_HINT}"
        )
    return pixels
