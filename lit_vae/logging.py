"""Logging against the paper's x axis: the number of training samples evaluated (Figure 2)."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor


@rank_zero_only
def log_at_samples(trainer: pl.Trainer, metrics: dict[str, float], samples: int) -> None:
    """Write ``metrics`` to every logger of ``trainer`` with step = training samples evaluated.

    Goes straight to the loggers (not through ``self.log``), so the step is ours rather than
    the optimizer-step count, and nothing is done per training step.
    """
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=samples)


@rank_zero_only
def log_image_at_samples(trainer: pl.Trainer, tag: str, image: Tensor, samples: int) -> None:
    """Add ``image`` (``[3, H, W]``, values in [0, 1]) to every TensorBoard logger of ``trainer``
    with step = training samples evaluated; other loggers have no common image call and are skipped."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, global_step=samples)
