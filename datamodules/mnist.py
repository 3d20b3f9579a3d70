"""MNIST as in the paper's experiments (Section 5), read with ``torchvision.datasets.MNIST``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import Tensor
from torchvision.datasets import MNIST
from torchvision.datasets.utils import download_and_extract_archive

from lit_vae.datamodules.base import InMemoryDataModule
from lit_vae.datamodules.batches import BatchTransform, TensorBatches
from lit_vae.datamodules.files import check_sha256, default_data_dir, download_verified, missing_files_error

#: SHA-256 of the uncompressed IDX files (their MD5 sums are the well-known ones).
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_HINT = "torchvision's layout is <data_dir>/MNIST/raw/<file> (uncompressed IDX files)."
_TRAIN_IMAGES = 60_000


class MNISTDataModule(InMemoryDataModule):
    """MNIST, 28 x 28 pixels flattened to 784 values in [0, 1].

    Splits (the paper's protocol): the first ``train_size`` (50,000) images of the official
    training set for training, its last ``val_size`` (10,000) for validation, and the official
    10,000 test images for testing.

    Args:
        data_dir: folder holding ``MNIST/raw/`` (default ``$LIT_VAE_DATA_DIR``, else ``data/``).
            Missing files are downloaded there, checked against their SHA-256, when the network allows.
        binarize: ``none`` uses grey levels as Bernoulli targets (the paper); ``static`` samples
            each pixel once from Bernoulli(grey level) with ``binarize_seed``; ``dynamic`` samples
            every training minibatch afresh, while validation and test keep the static sample.
        train_size: number of training images, taken from the start of the training set
            (Figure 3 uses 1,000 and 50,000).
        val_size: number of validation images, taken from the end of the training set.
        batch_size: M, the training minibatch size (the paper: 100).
        eval_batch_size: minibatch size for evaluation (any size; it does not change the numbers).
        seed: seed of the data order (and dynamic binarisation); by default drawn from the
            global RNG, so ``seed_everything`` fixes it.
        binarize_seed: seed of the static binarisation.
        pixel_divisor: grey level = pixel / ``pixel_divisor``. 255 maps the pixels onto [0, 1];
            256 gives the values of ``mnist.pkl.gz`` (largest 255/256), the file the paper-era
            code read, whose targets never reach 1 (docs/results.md, Figure 2).
        download: try to download missing files.
        predict_split: the split ``predict`` serves (each point with its digit as label).
    """

    image_shape = (28, 28)

    def __init__(
        self,
        data_dir: str | None = None,
        binarize: Literal["none", "static", "dynamic"] = "none",
        train_size: int = 50_000,
        val_size: int = 10_000,
        batch_size: int = 100,
        eval_batch_size: int = 1_000,
        seed: int | None = None,
        binarize_seed: int = 0,
        pixel_divisor: Literal[255, 256] = 255,
        download: bool = True,
        predict_split: Literal["train", "validation", "test"] = "test",
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed, predict_split)
        if binarize not in ("none", "static", "dynamic"):
            raise ValueError(f"binarize must be one of none, static, dynamic; got {binarize!r}")
        if train_size < 1 or val_size < 0 or train_size + val_size > _TRAIN_IMAGES:
            raise ValueError(
                f"train_size ({train_size}) >= 1 and val_size ({val_size}) >= 0 must add up to at most "
                f"{_TRAIN_IMAGES}, the size of MNIST's training set"
            )
        self.data_dir = default_data_dir(data_dir)
        self.binarize = binarize
        self.train_size = train_size
        self.val_size = val_size
        self.binarize_seed = binarize_seed
        self.pixel_divisor = pixel_divisor
        self.download = download

    @property
    def raw_folder(self) -> Path:
        return self.data_dir / "MNIST" / "raw"

    def prepare_data(self) -> None:
        missing = [name for name in SHA256 if not (self.raw_folder / name).exists()]
        if not missing:
            return
        if not self.download:
            raise missing_files_error("MNIST", self.raw_folder, missing, "download=False", _HINT)
        try:
            download_verified(self.raw_folder, _fetch_mnist, missing, _check_file)
        except OSError as error:  # URLError, HTTPError, timeouts and disk errors are all OSErrors
            raise missing_files_error("MNIST", self.raw_folder, missing, f"{type(error).__name__}: {error}", _HINT) from error

    def load_splits(self) -> dict[str, Tensor]:
        self.prepare_data()
        for name in SHA256:
            _check_file(self.raw_folder / name)
        grey_train, train_labels = self._images(train=True)
        test, test_labels = self._images(train=False)
        train = grey_train
        if self.binarize != "none":
            generator = torch.Generator().manual_seed(self.binarize_seed)
            train, test = torch.bernoulli(train, generator=generator), torch.bernoulli(test, generator=generator)
        self.split_labels = {"train": train_labels[: self.train_size], "validation": train_labels[_TRAIN_IMAGES - self.val_size :],
                             "test": test_labels}
        return {
            "train": (grey_train if self.binarize == "dynamic" else train)[: self.train_size].contiguous(),
            "validation": train[_TRAIN_IMAGES - self.val_size :].contiguous(),
            "test": test,
        }

    def train_transform(self) -> BatchTransform | None:
        return _bernoulli if self.binarize == "dynamic" else None

    def val_dataloader(self) -> TensorBatches | list[TensorBatches]:
        """The validation images; none (an empty list, which Lightning skips) with ``val_size`` 0."""
        return self._loader("validation") if self.val_size else []

    def _images(self, train: bool) -> tuple[Tensor, Tensor]:
        """The images of one of MNIST's files, ``[N, 784]`` in [0, 1], and their digits."""
        mnist = MNIST(str(self.data_dir), train=train, download=False)
        return mnist.data.reshape(len(mnist.data), -1).float().div_(self.pixel_divisor), mnist.targets


def _bernoulli(batch: Tensor, generator: torch.Generator) -> Tensor:
    return torch.bernoulli(batch, generator=generator)


def _check_file(path: Path) -> None:
    check_sha256(path, SHA256[path.name], _HINT)


def _fetch_mnist(folder: Path) -> None:
    """Download torchvision's MNIST archives (MD5-checked by torchvision) and unpack them."""
    errors = []
    for archive, md5 in MNIST.resources:
        for mirror in MNIST.mirrors:
            try:
                download_and_extract_archive(f"{mirror}{archive}", download_root=str(folder), filename=archive, md5=md5)
                break
            except OSError as error:
                errors.append(error)
        else:
            raise errors[-1]
