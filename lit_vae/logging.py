"""Logging against the paper's x axis: the number of training samples evaluated (Figure 2)."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only


@rank_zero_only
def log_at_samples(trainer: pl.Trainer, metrics: dict[str, float], samples: int) -> None:
    """Write ``metrics`` to every logger of ``trainer`` with step = training samples evaluated.

    Goes straight to the loggers (not through ``self.log``), so the step is ours rather than
    the optimizer-step count, and nothing is done per training step.
    """
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=samples)
