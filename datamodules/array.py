"""Your own data: the rows of an array file (``.npy``, ``.pt``) or the images of a folder, as the
splits of an :class:`~lit_vae.datamodules.base.InMemoryDataModule`."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from lit_vae.datamodules.base import InMemoryDataModule

#: The image files a folder is read for.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ArrayDataModule(InMemoryDataModule):
    """Datapoints from one file or folder, in [0, 1], split at random into training and test.

    ``path`` is a ``.npy`` file (read without pickle), a ``.pt`` file holding one tensor (read
    with ``weights_only=True``: no file can run code), or a folder of ``.png`` / ``.jpg`` images
    of one size (read in grey levels, in name order). Integer data is divided by 255 (8-bit
    pixels); every value must then lie in [0, 1], the range of the decoders' means: grey levels
    or binary pixels for ``--model.init_args.likelihood bernoulli`` (Eq. 11), continuous values
    for ``gaussian`` (Eq. 12, as Frey Face). Shapes: ``[N, H, W]`` or ``[N, 1, H, W]`` are images
    of H x W; ``[N, D]`` is D values a datapoint, drawn as ``image_shape`` (default one row).

    Args:
        path: the file or folder.
        test_size: datapoints in the test split, the last ones of a seeded shuffle (the rest train).
        split_seed: seed of that shuffle.
        image_shape: (rows, columns) of a datapoint for the pictures, for ``[N, D]`` data.
        batch_size: M, the training minibatch size.
        eval_batch_size: minibatch size for evaluation.
        seed: seed of the data order; by default drawn from the global RNG (``seed_everything``).
        predict_split: the split ``predict`` serves.
    """

    def __init__(
        self,
        path: str,
        test_size: int = 1_000,
        split_seed: int = 0,
        image_shape: tuple[int, int] | None = None,
        batch_size: int = 100,
        eval_batch_size: int = 1_000,
        seed: int | None = None,
        predict_split: Literal["train", "test"] = "test",
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed, predict_split)
        self.path = Path(path)
        data = read_datapoints(self.path)  # now: the model's input_dim and train_size are linked to it
        if not 1 <= test_size < len(data):
            raise ValueError(f"test_size must be between 1 and {len(data) - 1} (the data has {len(data)} points), got {test_size}")
        shape = tuple(data.shape[1:]) if data.dim() == 3 else (1, data.shape[1])
        if image_shape is not None and image_shape[0] * image_shape[1] != shape[0] * shape[1]:
            raise ValueError(f"image_shape {tuple(image_shape)} has {image_shape[0] * image_shape[1]} pixels; "
                             f"the datapoints of {self.path} have {shape[0] * shape[1]}")
        rows, columns = image_shape if image_shape is not None else shape
        self.image_shape = (int(rows), int(columns))
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(split_seed))
        self._data = data.reshape(len(data), -1)[order]
        self.train_size = len(data) - test_size

    def load_splits(self) -> dict[str, Tensor]:
        return {"train": self._data[: self.train_size].contiguous(), "test": self._data[self.train_size :].contiguous()}


def read_datapoints(path: Path) -> Tensor:
    """The datapoints at ``path`` as a float32 tensor ``[N, H, W]`` or ``[N, D]`` in [0, 1];
    ``ValueError`` saying what is wrong and what to do otherwise."""
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{path}: no {', '.join(IMAGE_SUFFIXES)} images in this folder")
        images = [np.asarray(Image.open(p).convert("L")) for p in files]  # grey levels, uint8
        if len({image.shape for image in images}) > 1:
            raise ValueError(f"{path}: the images differ in size; resize them to one size first")
        data = torch.from_numpy(np.stack(images))
    elif path.suffix == ".npy":
        try:
            data = torch.from_numpy(np.load(path, allow_pickle=False))
        except ValueError as error:
            raise ValueError(f"{path}: not a numeric .npy array ({error}); save it with numpy.save of a number array") from error
    elif path.suffix == ".pt":
        try:
            data = torch.load(path, weights_only=True)
        except pickle.UnpicklingError as error:
            raise ValueError(f"{path}: holds more than tensors, which torch refuses to unpickle (it could run code); "
                             "save one tensor with torch.save(tensor, path)") from error
        if not isinstance(data, Tensor):
            raise ValueError(f"{path}: holds a {type(data).__name__}, not one tensor; save it with torch.save(tensor, path)")
    else:
        raise ValueError(f"{path}: not a .npy or .pt file or a folder of images")
    if data.dim() == 4 and data.shape[1] == 1:
        data = data[:, 0]
    if data.dim() not in (2, 3) or len(data) < 2:
        raise ValueError(f"{path}: shape {tuple(data.shape)}; expected [N, D], [N, H, W] or [N, 1, H, W] with N >= 2")
    data = data.float() / 255 if not data.is_floating_point() else data.float()
    if not torch.isfinite(data).all() or data.min() < 0 or data.max() > 1:
        raise ValueError(f"{path}: values must lie in [0, 1] (integers are divided by 255), found [{data.min():.3g}, {data.max():.3g}]; "
                         "rescale the data first")
    return data
