"""Minibatches served by slicing one in-memory tensor.

At the paper's sizes (784-500-20, M = 100) a per-sample ``Dataset`` + ``DataLoader`` path costs
several times the model's own compute; slicing a resident tensor costs microseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor

from lit_vae.seeding import seeded_generator

#: ``transform(x, generator) -> x``, applied to the datapoints of each served minibatch.
BatchTransform = Callable[[Tensor, torch.Generator], Tensor]


class Batch(NamedTuple):
    """A minibatch: the datapoints ``x`` (``[B, D]``) and their rows ``index`` (``[B]``) in the
    split, so that state kept per datapoint (MCEM's chains) needs nothing from the loader."""

    x: Tensor
    index: Tensor  # type: ignore[assignment]  # a field, which hides tuple.index (unused on a Batch)


class TensorBatches:
    """An iterable of :class:`Batch` minibatches of ``data`` (rows are datapoints), resumable
    mid-epoch.

    The order of epoch ``e`` is a permutation drawn from ``seeded_generator(seed, e)``, so it
    depends on nothing but the seed and the epoch. Under data parallelism each of the
    ``world_size`` ranks takes every ``world_size``-th index of that permutation; for training
    (``even_shards=True``) each rank gets ``n // world_size`` of them, so all ranks run the same
    number of steps. ``state_dict`` holds the epoch and the position within it; Lightning saves
    it in checkpoints and restores it on resume.
    """

    def __init__(
        self,
        data: Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        even_shards: bool = False,
        transform: BatchTransform | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.transform = transform
        n = len(data)
        self.shard_size = n // world_size if even_shards else len(range(rank, n, world_size))
        self.epoch = 0
        self.position = 0  # batches already served in this epoch
        self._order, self._order_epoch = torch.empty(0, dtype=torch.long), -1

    def __len__(self) -> int:
        return -(-self.shard_size // self.batch_size)

    def _indices(self, epoch: int) -> Tensor:
        if self._order_epoch != epoch:  # one permutation per epoch, however often it is asked for
            n = len(self.data)
            order = torch.randperm(n, generator=seeded_generator(self.seed, epoch)) if self.shuffle else torch.arange(n)
            self._order, self._order_epoch = order[self.rank :: self.world_size][: self.shard_size], epoch
        return self._order

    def __iter__(self) -> Iterator[Batch]:
        if not self.shuffle:
            # Evaluation always covers the whole split: one cut short (Lightning's sanity check
            # stops after 2 batches) must not make the next one start where it stopped.
            self.position = 0
        epoch, indices = self.epoch, self._indices(self.epoch)
        contiguous = not self.shuffle and self.world_size == 1
        for b in range(self.position, len(self)):
            # Advance the state before yielding: the consumer may stop after the last batch.
            self.position = b + 1
            if self.position == len(self):
                self.epoch, self.position = self.epoch + 1, 0
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, self.shard_size)
            # index_select: half the time of self.data[rows] (docs/results.md, "Speed and memory")
            rows = torch.arange(lo, hi) if contiguous else indices[lo:hi]
            x = self.data[lo:hi] if contiguous else self.data.index_select(0, rows)
            if self.transform is not None:
                x = self.transform(x, seeded_generator(self.seed, epoch, b, self.rank))
            yield Batch(x, rows)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
