"""Checkpointing that leaves ``last.ckpt`` holding the state a run ended with."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint``, plus ``last.ckpt`` written after the step that reaches
    ``max_steps`` when that step is not an ``every_n_train_steps`` point.

    Lightning writes ``last.ckpt`` at the end of training only if it wrote none before, so a run
    of 250 steps checkpointed every 100 kept the step-200 state: an evaluation of ``last.ckpt``
    saw an older model and a resume redid 50 steps. The final checkpoint is written after the
    step, like every other, so a resume from it continues exactly. (A run stopped by an error or
    Ctrl-C does not get one: its last checkpoint stays as it was.)
    """

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        final = 0 <= trainer.max_steps <= trainer.global_step
        if final and self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_global_step_saved = trainer.global_step
