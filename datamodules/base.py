"""What the MNIST and Frey Face data modules share: splits held as in-memory tensors."""

from __future__ import annotations

import re

import lightning.pytorch as pl
import torch
from torch import Tensor

from lit_vae.datamodules.batches import BatchTransform, TensorBatches


def dataset_name(class_path: str) -> str:
    """The data set a data module class is for, read from its name (never by importing it):
    ``"MNIST"`` for ``lit_vae.datamodules.MNISTDataModule``, ``"Frey Face"`` for ``...FreyFaceDataModule``."""
    name = class_path.rpartition(".")[2].removesuffix("DataModule")
    return re.sub(r"(?<!^)(?=[A-Z][a-z])", " ", name)


class InMemoryDataModule(pl.LightningDataModule):
    """Each split is one ``[N, D]`` float tensor, served in minibatches by :class:`TensorBatches`.

    Subclasses fill ``self.splits`` (``train``, ``test`` and optionally ``validation``) in
    ``load_splits``, and ``self.split_labels`` (the same keys, ``[N]`` class labels) where the
    data set has labels, and set ``image_shape``. ``predict`` serves ``predict_split``.
    """

    image_shape: tuple[int, int]

    def __init__(self, batch_size: int, eval_batch_size: int, seed: int | None, predict_split: str = "test") -> None:
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError(f"batch_size and eval_batch_size must be >= 1, got {batch_size} and {eval_batch_size}")
        self.predict_split = predict_split
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        # Data order follows ``seed_everything`` unless a seed is given.
        self.seed = int(torch.randint(0, 2**62, ())) if seed is None else seed
        self.splits: dict[str, Tensor] = {}
        self.split_labels: dict[str, Tensor] = {}

    @property
    def input_dim(self) -> int:
        return self.image_shape[0] * self.image_shape[1]

    def load_splits(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def train_transform(self) -> BatchTransform | None:
        """A per-minibatch transform of training data (e.g. dynamic binarisation)."""
        return None

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.load_splits()
        if self.predict_split not in self.splits:
            raise ValueError(f"predict_split {self.predict_split!r}: this data module has no such split "
                             f"(it has {', '.join(self.splits)})")

    def labels(self, split: str) -> Tensor | None:
        """The class label of each datapoint of ``split`` (``[N]``), or ``None`` where the data set has none."""
        self.setup()
        return self.split_labels.get(split)

    def _loader(self, split: str, train: bool = False) -> TensorBatches:
        self.setup()
        trainer = self.trainer
        return TensorBatches(
            self.splits[split],
            self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            seed=self.seed,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
            even_shards=train,
            transform=self.train_transform() if train else None,
        )

    def train_dataloader(self) -> TensorBatches:
        return self._loader("train", train=True)

    def test_dataloader(self) -> TensorBatches:
        return self._loader("test")

    def predict_dataloader(self) -> TensorBatches:
        return self._loader(self.predict_split)
