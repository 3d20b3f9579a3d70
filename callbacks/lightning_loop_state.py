"""A workaround for Lightning 2.6's restore of its loops at an epoch's end, in one place.

Restored from the state right after a pass's last step, Lightning 2.6 counts the epoch as
finished only if no validation ever ran before (a stale flag of its validation loop), so the run's
epoch lagged by one; restored from its own epoch-end state, it ran a pass of the next epoch's data
under the old epoch number. :class:`~lit_vae.callbacks.checkpoint.RunCheckpoint` therefore saves
a checkpoint due at a pass's last step as the state at the next epoch's start, written here into
Lightning's saved loop progress (``checkpoint["loops"]["fit_loop"]``), a private format. The
Lightning versions this is verified on are :data:`VERIFIED_LIGHTNING`, checked when a fit starts
(:func:`check_lightning_version`); ``tests/test_resume.py`` fails first where they differ.
"""

from __future__ import annotations

from typing import Any

import lightning
import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn

#: The Lightning minor versions whose loop state :func:`as_next_epoch_start` is verified on.
VERIFIED_LIGHTNING = ("2.6",)


def check_lightning_version(version: str = lightning.__version__) -> bool:
    """Whether ``version`` is one of :data:`VERIFIED_LIGHTNING`; warns once, naming it, if not."""
    verified = ".".join(version.split(".")[:2]) in VERIFIED_LIGHTNING
    if not verified:
        rank_zero_warn(f"Lightning {version}: exact resume at epoch ends rewrites Lightning's saved loop state, verified "
                       f"on Lightning {', '.join(VERIFIED_LIGHTNING)} only; run tests/test_resume.py before relying on it")
    return verified


def as_next_epoch_start(fit_loop: dict[str, Any]) -> None:
    """Rewrite the state of Lightning's fit loop (``checkpoint["loops"]["fit_loop"]``), saved at
    the end of an epoch whose work is all done, as the state at the start of the next epoch: every
    epoch counter at the number of finished epochs, the epoch's batch counters at zero, no batch
    marked last. That is the state Lightning starts an epoch from in a run that never stopped;
    left as saved, its restore takes the epoch-end state for an unfinished epoch and runs a pass
    of the next epoch's data under the old epoch number."""
    for counters in fit_loop["epoch_progress"].values():  # "total" and "current"
        counters.update(ready=counters["processed"], started=counters["processed"], completed=counters["processed"])
    batches = fit_loop["epoch_loop.batch_progress"]
    batches["current"].update(ready=0, started=0, processed=0, completed=0)
    batches["is_last_batch"] = False


def is_next_epoch_start(fit_loop: dict[str, Any]) -> bool:
    """Whether the saved state of Lightning's fit loop is one that :func:`as_next_epoch_start` wrote."""
    epochs, batches = fit_loop["epoch_progress"]["total"], fit_loop["epoch_loop.batch_progress"]
    return (len({epochs["ready"], epochs["started"], epochs["processed"], epochs["completed"]}) == 1
            and not any(batches["current"].values()) and not batches["is_last_batch"])


def validation_due_on_restart(trainer: pl.Trainer, fit_loop: dict[str, Any]) -> bool:
    """Whether Lightning 2.6's training-epoch loop, restarting from the epoch-start state
    ``fit_loop`` (:func:`is_next_epoch_start`), finds a validation due before the epoch's first
    batch: the validation epoch and batch rules of its ``_should_check_val_fx`` at batch index -1
    (time-based validation intervals are never due at the start)."""
    if not trainer.enable_validation:
        return False
    interval = trainer.val_check_interval
    if trainer.check_val_every_n_epoch is None:  # every `interval` batches of the whole run
        return isinstance(interval, int) and fit_loop["epoch_loop.batch_progress"]["total"]["ready"] % interval == 0
    epoch = fit_loop["epoch_progress"]["current"]["completed"]
    return (epoch + 1) % trainer.check_val_every_n_epoch == 0 and isinstance(interval, (int, float))
