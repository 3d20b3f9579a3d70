"""The checkpoints of a run: step checkpoints and ``last.ckpt`` at the final step or at a stop
by a signal (:class:`RunCheckpoint`), and the run state they carry besides the model (global RNG
states, flushed logs) with the refusal to save a non-finite state (:class:`RunState`). Reading and
writing the files: :mod:`lit_vae.callbacks.checkpoint_files`.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from typing import Any, Literal, cast

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info

from lit_vae.callbacks.lightning_loop_state import (
    as_next_epoch_start,
    check_lightning_version,
    is_next_epoch_start,
    validation_due_on_restart,
)
from lit_vae.interfaces import NonFiniteError, TrainingModel, non_finite_message
from lit_vae.logging import keep_csv_rows

#: The command line's step-checkpoint interval: 2,000 steps (2 x 10^5 samples at M = 100).
EVERY_N_TRAIN_STEPS = 2_000


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` for step-interval checkpoints, with two changes that make a
    resume continue exactly as the uninterrupted run, however often it is stopped:

    - A checkpoint due at the last step of a pass through the training set is written at the end
      of that epoch (``on_train_epoch_end``), after the epoch's validation and epoch-end hooks,
      with the loops' state rewritten as the start of the next epoch
      (:func:`as_next_epoch_start`). The model is the same as right after the step; what differs
      is where Lightning's loops stand. Restored from the state right after a pass's last step,
      Lightning 2.6 counts the epoch as finished only if no validation ever ran before (a stale
      flag of its validation loop): ``current_epoch`` then lagged by one, which shifted the
      validation schedule and checkpoint names, and the validation due at that epoch's end was
      skipped. Restored from its own epoch-end state, it ran a pass of the next epoch's data
      under the old epoch number. From the next epoch's start it continues as a run that never
      stopped (``tests/test_resume.py``).
    - ``last.ckpt`` is also written for the step that reaches ``max_steps`` when that step is not
      an ``every_n_train_steps`` point (Lightning writes it at the end of training only if it
      wrote none before, so an evaluation of ``last.ckpt`` saw an older model and a resume redid
      steps). A run stopped by an error does not get one: its last checkpoint stays as it was.
      Written through the public ``Trainer.save_checkpoint``.
    - A fit stopped by Ctrl-C (SIGINT) or SIGTERM stops at the next step boundary (a pass's last
      step: after its epoch-end hooks, as above), writes ``last.ckpt`` there and says where;
      ``--ckpt_path last`` continues it exactly. The signal is taken from Lightning (whose own
      SIGTERM handling raises out of the loop after a pass's last step, before the epoch-end
      state exists) while the loop runs; a second Ctrl-C stops at once, without a checkpoint.
      :attr:`stopped_by` then names the signal, for the command's exit status.

    Args:
        every_n_train_steps: as in ``ModelCheckpoint``.
        stop_signals: the signals that stop a fit at a step with a checkpoint (default SIGINT and
            SIGTERM; the sweep adds a cluster's pre-emption signals, SIGUSR1 and SIGUSR2).
        **kwargs: ``ModelCheckpoint``'s other arguments.
    """

    def __init__(self, every_n_train_steps: int | None = None,
                 stop_signals: list[Literal["SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2"]] | None = None, **kwargs: Any) -> None:
        super().__init__(every_n_train_steps=every_n_train_steps, **kwargs)
        check_lightning_version()
        self.every_n_train_steps = every_n_train_steps
        # Step checkpoints only: Lightning's epoch-end hook would then only write last.ckpt again
        # for a step whose checkpoint (and last.ckpt) was just written, after copying every
        # logged metric, at every pass's end (a Frey Face pass is 16 steps).
        self._steps_only = bool(every_n_train_steps) and not kwargs.get("every_n_epochs")
        self.stop_signals = [signal.Signals[name] for name in (stop_signals or ["SIGINT", "SIGTERM"])]
        self._pass_end: int | None = None  # the batch index of a pass's last step, saved at the epoch's end
        self._at_epoch_end = False
        self._final_step = -1  # the step whose last.ckpt this callback wrote after the run's final step
        self.stopped_by: signal.Signals | None = None  # the signal that stopped the fit at a step boundary
        self._requested: signal.Signals | None = None
        self._handlers: dict[signal.Signals, Any] = {}

    @property
    def state_key(self) -> str:
        # One checkpoint callback per run, found again whatever the interval: ModelCheckpoint's
        # key holds every_n_train_steps, so a resume with another interval lost the callback's
        # state and left the step checkpoints it had written behind for ever.
        return f"{type(self).__qualname__}{{'monitor': {self.monitor!r}, 'mode': {self.mode!r}}}"

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("dirpath")
        if saved and self.dirpath and saved != self.dirpath:  # the run folder was moved or renamed
            state_dict = relocated(state_dict, saved, str(self.dirpath))
        super().load_state_dict(state_dict)

    def tracked_files(self, checkpoint: dict[str, Any]) -> set[str] | None:
        """The names of the files this callback's state in ``checkpoint`` tracks (the best, the
        k-th best and the last checkpoint); ``None`` where it names its files otherwise than
        Lightning's default (``filename`` given) or the state is absent, so that a resume leaves
        every step checkpoint in place (:meth:`lit_vae.run_folder.RunFolder.clear_for_resume`)."""
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if self.filename is not None or state is None:
            return None
        return {os.path.basename(path) for path in [*state.get("best_k_models", {}), state.get("best_model_path"),
                                                    state.get("kth_best_model_path"), state.get("last_model_path")] if path}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)  # starts the clock of train_time_interval
        # After Lightning registered its own handlers (they are restored when the loop ends).
        if threading.current_thread() is threading.main_thread():
            for signum in self.stop_signals:
                self._handlers[signum] = signal.signal(signum, self._request_stop)

    def _request_stop(self, signum: int, frame: Any) -> None:
        if self._requested is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._requested = signal.Signals(signum)
        rank_zero_info(f"\n{self._requested.name}: stopping at the end of this step, with a checkpoint "
                       "(Ctrl-C again stops at once, without one)")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handlers()
        # ModelCheckpoint writes last.ckpt here if it wrote none in this process; after the final
        # step's, that would replace it with the state after Lightning's end-of-training bookkeeping.
        if self._final_step != trainer.global_step:
            super().on_train_end(trainer, pl_module)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()
        super().on_exception(trainer, pl_module, exception)

    def _restore_handlers(self) -> None:
        while self._handlers:
            signum, handler = self._handlers.popitem()
            signal.signal(signum, handler)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if batch_idx + 1 == trainer.num_training_batches:
            self._pass_end = batch_idx
            return
        self._save(trainer, pl_module, batch_idx)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pass_end is not None:
            batch_idx, self._pass_end = self._pass_end, None
            self._at_epoch_end = True
            try:
                self._save(trainer, pl_module, batch_idx)
            finally:
                self._at_epoch_end = False
        if not self._steps_only:
            super().on_train_epoch_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._at_epoch_end:
            as_next_epoch_start(checkpoint["loops"]["fit_loop"])

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Called before Lightning restores its loops from the same dictionary.
        fit_loop = checkpoint.get("loops", {}).get("fit_loop")
        if fit_loop is not None and is_next_epoch_start(fit_loop) and validation_due_on_restart(trainer, fit_loop):
            # Lightning 2.6 restores such a state as "restarted on the last batch" and, when a
            # validation is due before the epoch's first batch, runs one iteration without a batch
            # that counts one more batch stepped (the step at which Lightning's own self.log
            # writes); the uninterrupted run does not.
            fit_loop["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1

    def _save(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch_idx: int) -> None:
        """The step checkpoint (``ModelCheckpoint``'s rule), then ``last.ckpt`` if this step ends the run."""
        super().on_train_batch_end(trainer, pl_module, None, None, batch_idx)
        step = trainer.global_step
        every = self.every_n_train_steps or 0
        on_grid = every > 0 and step % every == 0
        final = 0 <= trainer.max_steps <= step
        if self.save_last and (final or self._requested is not None) and not on_grid and self.dirpath is not None:
            path = os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)
            trainer.save_checkpoint(path, weights_only=self.save_weights_only)
            self.last_model_path, self._final_step = path, step
        if self._requested is not None and not final:
            self.stopped_by, trainer.should_stop = self._requested, True
            rank_zero_info(f"stopped by {self.stopped_by.name} at {getattr(pl_module, 'samples_evaluated', step):,} samples "
                           f"(step {step:,}); checkpoint: {self.last_model_path}. Continue with --ckpt_path last")


def relocated(state: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """``ModelCheckpoint``'s state with the paths of checkpoints in folder ``old`` moved to
    ``new``: what it knew of a run folder that was since moved or renamed (Lightning otherwise
    forgets which step checkpoints it wrote there, and never removes them)."""
    def move(path: Any) -> Any:
        return os.path.join(new, os.path.basename(path)) if path and os.path.dirname(path) == old else path
    state = {key: move(value) if key.endswith("_path") else value for key, value in state.items()}
    state["best_k_models"] = {move(path): score for path, score in state.get("best_k_models", {}).items()}
    state["dirpath"] = new
    return state


class RunState(pl.Callback):
    """What a checkpoint carries besides the model, and what it must never carry.

    On save: refuses (``NonFiniteError``) a state with non-finite parameters, so the last
    checkpoint on disk stays the last good state; flushes the loggers first, so a run killed
    later loses no logged point that its resume will not log again; and saves the global torch,
    numpy and python RNG states. Training draws its noise and data order from generators keyed
    by position, never from the global ones; they are saved for user code (callbacks) that does.
    On load, only when training resumes: restores those RNG states (loading a model to use it
    leaves them alone) and keeps a CSV logger's earlier rows (:func:`keep_csv_rows`).
    """

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Once per checkpoint, not per step: never write parameters that an update broke.
        if not all(torch.isfinite(p).all() for p in pl_module.parameters()):
            raise NonFiniteError(non_finite_message(cast(TrainingModel, pl_module), "non-finite parameters"))
        for logger in trainer.loggers:
            logger.save()
        checkpoint["rng_states"] = global_rng_states()

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING and "rng_states" in checkpoint:
            set_global_rng_states(checkpoint["rng_states"])
        if trainer.state.fn == TrainerFn.FITTING:
            keep_csv_rows(trainer, checkpoint.get("samples_evaluated", 0))


def global_rng_states() -> dict[str, Any]:
    """The states of torch's, numpy's and Python's global generators, as tensors and numbers
    (what ``torch.load(weights_only=True)`` reads back)."""
    _, keys, position, has_gauss, gauss = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    version, state, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": torch.tensor(state, dtype=torch.int64), "gauss": python_gauss},
    }


def set_global_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`global_rng_states` returned."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["gauss"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))
