"""Lower-bound curves of Figure 2: train and test, per datapoint, against samples evaluated."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torchmetrics import MeanMetric

from lit_vae.callbacks.schedule import DEFAULT_MANTISSAS, LogSpacedSchedule
from lit_vae.interfaces import evaluating, require_model
from lit_vae.logging import log_at_samples


class LowerBoundCallback(pl.Callback):
    """Logs ``lower_bound/train`` and ``lower_bound/test`` with step = training samples evaluated.

    - ``lower_bound/train``: at the end of every complete pass through the training set, the
      mean per datapoint of that pass's minibatch estimates (a running estimate, like the
      paper's train curve; it lags the test curve early in training because the parameters
      improve during the pass). A pass cut short by the end of training is carried in the
      checkpoint and completed by a resumed run.
    - ``lower_bound/test``: the mean over the whole test split (``datamodule.test_dataloader()``)
      in eval mode, whenever training passes a point of the log-spaced schedule (1, 2, 5 x 10^k
      samples by default), and at the end of training. It runs the model's own ``test_step``
      and ``log_bound``, so it is the number ``train.py test`` gives for the same state.

    Models without a recognition model (``has_encoder`` false: ``MCEM``) have no lower bound;
    for them it does nothing. Per step it only adds two tensors; means are reduced with
    torchmetrics, so they are over all ranks under DDP. The evaluation noise comes from the
    model's evaluation stream, never from the training one.

    Args:
        mantissas: the schedule's points are ``m x 10^k`` for each mantissa ``m``.
    """

    def __init__(self, mantissas: Sequence[float] = DEFAULT_MANTISSAS) -> None:
        self.schedule = LogSpacedSchedule(mantissas)
        self._sum = torch.zeros((), dtype=torch.float64)
        self._count = 0
        self._last_test = -1
        self._train_mean = MeanMetric()
        self._active = True

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require_model(pl_module, type(self).__name__)
        self._active = pl_module.has_encoder
        if not self._active:
            rank_zero_info(f"{type(pl_module).__name__} has no recognition model q(z|x), hence no lower bound: "
                           "lower_bound/* is not logged (the marginal likelihood is).")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._active:
            return
        bound = outputs["lower_bound"]
        if self._sum.device != bound.device:
            self._sum = self._sum.to(bound.device)
        self._sum += bound.sum()
        self._count += bound.numel()
        # The pass ends here, not in on_train_epoch_end: checkpoints written after this batch
        # (ModelCheckpoint runs after other callbacks) then hold the next pass's empty sums.
        if batch_idx + 1 == trainer.num_training_batches:
            metric = self._train_mean.to(pl_module.device)
            metric.update(self._sum / self._count, weight=self._count)
            self._sum.zero_()
            self._count = 0
            value = metric.compute().item()
            metric.reset()
            log_at_samples(trainer, {"lower_bound/train": value}, pl_module.samples_evaluated)
            pl_module.log("lower_bound/train", value, prog_bar=True, logger=False, rank_zero_only=True)
        if self.schedule.due(pl_module.samples_before_step, pl_module.samples_evaluated):
            value = self.evaluate_test(trainer, pl_module)
            if value is not None:
                pl_module.log("lower_bound/test", value, prog_bar=True, logger=False, rank_zero_only=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._active and self._last_test != pl_module.samples_evaluated:
            self.evaluate_test(trainer, pl_module)

    @torch.no_grad()
    def evaluate_test(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> float | None:
        """The model's lower bound on the test split, in eval mode, logged at the current sample
        count (``None`` without a data module to give the test split)."""
        datamodule = trainer.datamodule
        if datamodule is None:
            rank_zero_warn("LowerBoundCallback needs a LightningDataModule for the test split; lower_bound/test is not logged.")
            return None
        self._last_test = pl_module.samples_evaluated
        with evaluating(pl_module):
            for batch_idx, batch in enumerate(datamodule.test_dataloader()):
                pl_module.test_step(pl_module.transfer_batch_to_device(batch, pl_module.device, 0), batch_idx)
        return pl_module.log_bound("lower_bound/test", pl_module.test_bound)

    def state_dict(self) -> dict[str, Any]:
        return {"sum": self._sum.item(), "count": self._count, "last_test": self._last_test}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._sum = torch.tensor(state_dict["sum"], dtype=torch.float64)
        self._count = state_dict["count"]
        self._last_test = state_dict["last_test"]
