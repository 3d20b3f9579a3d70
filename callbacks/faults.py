"""Fault injection, to see exact resume hold on your own machine or cluster:

    train.py fit --config configs/mnist.yaml --trainer.callbacks+=lit_vae.callbacks.faults.KillAt \
        --trainer.callbacks.step 4243           # then: --ckpt_path last, and compare

``benchmarks/faults.py`` and the tests kill runs with it.
"""

from __future__ import annotations

import os
import signal

import lightning.pytorch as pl


class KillAt(pl.Callback):
    """SIGKILL to its own process at the start of training step ``step``: no handler, no flush,
    no cleanup, as the out-of-memory killer or a pre-empted node does it."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
