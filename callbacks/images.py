"""Pictures of the model while it trains: the learned manifold (Appendix A, Figure 4), samples from
the prior (Figure 5) and reconstructions of test images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor
from torchvision.utils import make_grid, save_image

from lit_vae.callbacks.schedule import DEFAULT_MANTISSAS, LogSpacedSchedule
from lit_vae.estimators import latent_activity
from lit_vae.interfaces import SplitData, evaluating, model_of, recognition_of, require_model
from lit_vae.logging import log_image_at_samples
from lit_vae.run_folder import RunFolder

#: Test points whose encodings rank the latent dimensions for the manifold: enough to tell the
#: active from the inactive (their variances differ by orders of magnitude), a tenth of MNIST's
#: test split, so that the picture costs little at each point of the schedule.
ACTIVITY_POINTS = 1000


def manifold_points(size: int, latent_dim: int, dims: Sequence[int] = (0, 1)) -> Tensor:
    """The latent points of the manifold grid (Appendix A): ``[size^2, latent_dim]`` (one row of
    ``size`` points when ``latent_dim`` is 1).

    Coordinates linearly spaced on the unit square, (i + 0.5) / size for i = 0 .. size - 1, are
    mapped through the inverse CDF of the standard normal, so that the grid covers the prior
    evenly in probability. Point ``r * size + c`` (row r, column c of the picture) has
    ``z[dims[0]]`` from column c and ``z[dims[1]]`` from row r; every other dimension is 0, the
    prior's mean.
    """
    if size < 1:
        raise ValueError(f"manifold_size must be >= 1, got {size}")
    axis = torch.special.ndtri((torch.arange(size, dtype=torch.float64) + 0.5) / size).float()
    if latent_dim == 1:
        return axis[:, None]
    if len(dims) != 2 or dims[0] == dims[1] or not all(0 <= d < latent_dim for d in dims):
        raise ValueError(f"manifold_dims must be two different latent dimensions in [0, {latent_dim}), got {list(dims)}")
    z = torch.zeros(size, size, latent_dim)
    z[:, :, dims[0]] = axis[None, :]
    z[:, :, dims[1]] = axis[:, None]
    return z.reshape(size * size, latent_dim)


class ImagesCallback(pl.Callback):
    """Logs ``images/manifold``, ``images/samples`` and ``images/reconstructions`` to TensorBoard
    with step = training samples evaluated, at the lower bound's log-spaced points (1, 2, 5 x
    10^k samples). At the end of a fit they are saved as ``images/<name>_<samples>.png`` in the
    run folder (a resumed run adds its own, later files), not logged, so that a run stopped and
    resumed logs the same points as one that never stopped.

    - manifold: decoder means on the :func:`manifold_points` grid, ``manifold_size`` squared
      (Appendix A: 20 x 20 for MNIST, 10 x 10 for Frey Face). For Nz > 2 it spans two latent
      dimensions with the others at 0: ``manifold_dims`` if given, else the two most active ones
      at that point (the largest variance of the encoder's mean over the first
      :data:`ACTIVITY_POINTS` test points, see ``latent/active_units``), in increasing order;
      (0, 1) for a model without an encoder.
    - samples: decoder means at ``num_samples`` fixed draws z ~ N(0, I) (Figure 5), the same
      draws at every point, so the pictures show how the model changes.
    - reconstructions: the first ``num_reconstructions`` test images, each row of originals
      followed by a row of their reconstructions (decoder mean at the encoder mean); only for
      models with an encoder (not ``MCEM``).

    Images are 28 x 28 (MNIST) or 28 rows x 20 columns (Frey Face), from the data module's
    ``image_shape``, values in [0, 1]. Only global rank 0 draws; nothing here touches the
    training RNG (the sample draws come from a generator of their own).

    Args:
        manifold_size: points per axis of the manifold grid.
        manifold_dims: the two latent dimensions the grid spans when Nz > 2 (default: the two most active).
        num_samples: prior samples in ``images/samples``.
        num_reconstructions: test images in ``images/reconstructions`` (a multiple of ``nrow``).
        nrow: images per row in the samples and reconstructions grids.
        seed: seed of the fixed prior draws.
        mantissas: the schedule's points are ``m x 10^k`` for each mantissa ``m``.
    """

    def __init__(
        self,
        manifold_size: int = 20,
        manifold_dims: tuple[int, int] | None = None,
        num_samples: int = 100,
        num_reconstructions: int = 50,
        nrow: int = 10,
        seed: int = 0,
        mantissas: Sequence[float] = DEFAULT_MANTISSAS,
    ) -> None:
        for name, value in (("manifold_size", manifold_size), ("num_samples", num_samples), ("nrow", nrow)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_reconstructions < 0 or num_reconstructions % nrow:
            raise ValueError(f"num_reconstructions must be a non-negative multiple of nrow={nrow}, got {num_reconstructions}")
        self.manifold_size = manifold_size
        self.manifold_dims: tuple[int, ...] | None = tuple(manifold_dims) if manifold_dims is not None else None
        self.num_samples = num_samples
        self.num_reconstructions = num_reconstructions
        self.nrow = nrow
        self.seed = seed
        self.schedule = LogSpacedSchedule(mantissas)
        self._shape: tuple[int, int] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require_model(pl_module, type(self).__name__)
        model = model_of(pl_module)
        if self.manifold_dims is not None:
            # Raises here, before training, on dimensions the model does not have (the CLI checks earlier).
            manifold_points(self.manifold_size, model.latent_dim, self.manifold_dims)
        self._sample_z = model.prior_sample(self.num_samples, torch.Generator().manual_seed(self.seed))
        # A broadcast from rank 0, so it is read here, where every rank calls it.
        self._folder = RunFolder.writing_to(trainer).path / "images"
        data = getattr(trainer, "datamodule", None)
        if not isinstance(data, SplitData):
            self._shape = None
            rank_zero_warn("ImagesCallback needs one of this project's data modules (image shape, test split); no images are logged.")
        else:
            self._shape = data.image_shape
            data.setup(stage)
            self._test = data.splits["test"]
            self._test_images = self._test[: min(self.num_reconstructions, len(self._test) // self.nrow * self.nrow)]

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        model = model_of(pl_module)
        if self.schedule.due(model.samples_before_step, model.samples_evaluated):
            self._log(trainer, pl_module)

    @rank_zero_only
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Saved as files, not logged: a run stopped off the schedule and resumed then logs the
        # same points as the run that never stopped.
        images = self.draw(pl_module)
        if images:
            self._folder.mkdir(parents=True, exist_ok=True)
            for name, image in images.items():
                save_image(image, self._folder / f"{name}_{model_of(pl_module).samples_evaluated}.png")

    @rank_zero_only
    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for name, image in self.draw(pl_module).items():
            log_image_at_samples(trainer, f"images/{name}", image, model_of(pl_module).samples_evaluated)

    @torch.no_grad()
    def draw(self, pl_module: pl.LightningModule) -> dict[str, Tensor]:
        """The three pictures as ``[3, H, W]`` grids with values in [0, 1], keyed by name
        (empty without a data module that gives the image shape)."""
        shape = self._shape
        if shape is None:
            return {}
        model, device = model_of(pl_module), pl_module.device
        with evaluating(pl_module):
            grid = manifold_points(self.manifold_size, model.latent_dim, self.spanned_dims(pl_module)).to(device)
            images = {
                "manifold": self._grid(model.decode_mean(grid), shape, self.manifold_size, padding=0),
                "samples": self._grid(model.decode_mean(self._sample_z.to(device)), shape, self.nrow),
            }
            if len(self._test_images) and model.has_encoder:
                x = self._test_images.to(device)
                reconstruction = model.decode_mean(recognition_of(pl_module).encode(x)[0])
                # Rows of originals, each followed by the row of their reconstructions.
                pairs = torch.stack([x.view(-1, self.nrow, x.shape[-1]), reconstruction.view(-1, self.nrow, x.shape[-1])], dim=1)
                images["reconstructions"] = self._grid(pairs.reshape(-1, x.shape[-1]), shape, self.nrow)
        return images

    @torch.no_grad()
    def spanned_dims(self, pl_module: pl.LightningModule) -> tuple[int, ...]:
        """The latent dimensions the manifold spans now: ``manifold_dims``, else the two most
        active over the first :data:`ACTIVITY_POINTS` test points (:func:`~lit_vae.estimators.latent_activity`)."""
        model = model_of(pl_module)
        if self.manifold_dims is not None:
            return self.manifold_dims
        if model.latent_dim <= 2 or not model.has_encoder:
            return (0, 1)
        with evaluating(pl_module):
            encode = recognition_of(pl_module).encode
            activity = latent_activity(encode(self._test[:ACTIVITY_POINTS].to(pl_module.device))[0])
        first, second = sorted(activity.topk(2).indices.tolist())
        return first, second

    @staticmethod
    def _grid(pixels: Tensor, shape: tuple[int, int], nrow: int, padding: int = 2) -> Tensor:
        tiles = pixels.float().cpu().clamp(0, 1).view(-1, 1, *shape)
        return make_grid(tiles, nrow=nrow, padding=padding, pad_value=1.0)
