"""A run's progress: in a small file, for whatever watches runs from outside (``lit-vae
reproduce``, a cluster job's owner): samples evaluated, seconds trained, samples per second; and
on the console's progress bar, the samples evaluated (Figure 2's x axis)."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

from lit_vae.interfaces import model_of, require_model
from lit_vae.run_folder import RunFolder


class ProgressFile(pl.Callback):
    """Writes ``progress.json`` into the run folder (:meth:`RunFolder.of_trainer`) at most every
    ``every_seconds`` during training and once at its end::

        {"samples_evaluated": 1200000, "max_steps": 100000, "global_step": 12000,
         "seconds": 61.3, "samples_per_second": 19575.9}

    ``seconds`` is the wall-clock time spent in ``fit`` over every process that trained the run:
    it is carried in checkpoints, so a resumed run continues the count from its checkpoint (the
    work lost after the checkpoint is done again and counted once). ``samples_per_second`` is
    over those seconds (a run resumed from a checkpoint that carries no time counts from there).
    The file is replaced atomically (:meth:`RunFolder.write_progress`); only rank 0 writes it.

    Args:
        every_seconds: the least time between two writes.
    """

    def __init__(self, every_seconds: float = 5.0) -> None:
        if every_seconds <= 0:
            raise ValueError(f"every_seconds must be positive, got {every_seconds}")
        self.every_seconds = every_seconds
        self._seconds_before = 0.0  # trained by earlier processes, up to the checkpoint resumed from
        self._untimed: int | None = None  # samples a checkpoint without a time brought
        self._started = self._written = time.monotonic()
        self._folder: RunFolder | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require_model(pl_module, type(self).__name__)
        folder = RunFolder.of_trainer(trainer)
        if trainer.is_global_zero:
            self._folder = folder

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = self._written = time.monotonic()
        if self._untimed is None:  # a fresh run, or a checkpoint written without this callback
            self._untimed = model_of(pl_module).samples_evaluated

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if time.monotonic() - self._written >= self.every_seconds:
            self._write(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module)

    def seconds(self) -> float:
        """Wall-clock seconds of training so far, this process's and those before its checkpoint."""
        return self._seconds_before + time.monotonic() - self._started

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._written = time.monotonic()
        if self._folder is None:
            return
        samples = model_of(pl_module).samples_evaluated
        seconds, timed = self.seconds(), samples - (self._untimed or 0)
        progress = {"samples_evaluated": samples, "max_steps": trainer.max_steps,
                    "global_step": trainer.global_step, "seconds": round(seconds, 3),
                    "samples_per_second": round(timed / seconds, 1) if seconds > 0 else 0.0}
        self._folder.write_progress(progress)

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds(), "untimed": self._untimed or 0}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._seconds_before, self._untimed = float(state_dict["seconds"]), int(state_dict["untimed"])


class SamplesProgressBar(TQDMProgressBar):
    """Lightning's progress bar, with the training samples evaluated among its numbers (the x
    axis of Figures 2 and 3; Lightning's own counts are steps).

    A fit bounded by ``max_steps`` (every run of the paper's: its samples over M) gets one
    training bar for the whole fit, counting steps towards ``max_steps`` from where a resumed
    run stands, instead of one bar per pass through the training set: a Frey Face pass is 16
    minibatches, so a bar per epoch would be redrawn 6,250 times in 10^7 samples and never say
    how far the run is, and Lightning's per-epoch bar hooks cost 5% of such a pass's time
    (``docs/results.md``, the shell's cost). A fit bounded only by epochs keeps Lightning's bar.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        require_model(pl_module, type(self).__name__)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, int | str | float | dict[str, float]]:
        return {"samples": f"{pl_module.samples_evaluated:,}", **super().get_metrics(trainer, pl_module)}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if trainer.max_steps > 0:
            bar = self.train_progress_bar
            bar.reset(total=trainer.max_steps)
            bar.set_description("Training")
            self._show(bar, trainer.global_step)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.max_steps <= 0:
            super().on_train_epoch_start(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.max_steps <= 0:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        step = trainer.global_step
        if self.is_enabled and (step % self.refresh_rate == 0 or step == trainer.max_steps):
            self._show(self.train_progress_bar, step)
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.max_steps <= 0:
            super().on_train_epoch_end(trainer, pl_module)

    @staticmethod
    def _show(bar: Any, step: int) -> None:
        if not bar.disable:
            bar.n = step
            bar.refresh()
