"""Checkpoints, in one place: reading them safely and checking them against the run, writing
them atomically, writing ``last.ckpt`` at the final step, and the run state they carry besides
the model (global RNG states, flushed logs) with the refusal to save a non-finite state.

Every read is ``torch.load(weights_only=True)`` (:func:`read_checkpoint`, and
:func:`stored_step` for the step alone): the checkpoints hold only tensors and plain values, so a
file whose unpickling would run code is refused, never executed.
"""

from __future__ import annotations

import math
import os
import pickle
import random
import re
import signal
import tempfile
import threading
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info

from lit_vae.interfaces import NonFiniteError, non_finite_message

#: Hyperparameters that fix the shapes of the networks.
ARCHITECTURE = ("input_dim", "latent_dim", "hidden_dim", "likelihood")
#: The classes a checkpoint may name (``hyper_parameters["_class_path"]``, which LightningCLI
#: hands to jsonargparse to import): this project's models, by every path they are known by.
TRUSTED_CLASSES = frozenset({"lit_vae.VAE", "lit_vae.model.VAE", "lit_vae.baselines.WakeSleep",
                             "lit_vae.baselines.wake_sleep.WakeSleep", "lit_vae.baselines.MCEM", "lit_vae.baselines.mcem.MCEM"})
#: The one instantiator a checkpoint may name: the one LightningCLI itself saves.
TRUSTED_INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path``, read with ``weights_only=True``; ``ValueError`` saying why if it
    needs arbitrary unpickling (it could run code), cannot be read, fails its archive's CRC check
    (a damaged byte anywhere, tensor data included), is not a checkpoint, or holds non-finite
    parameters or optimizer state (a state no run should continue from)."""
    damaged = _damaged_member(path)
    if damaged is not None:
        raise ValueError(f"{path} is damaged: {damaged}. It was not loaded; resume from an older checkpoint "
                         "(--ckpt_path PATH) or start a fresh run.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds objects that only arbitrary unpickling could rebuild, which can run code; it was not "
            f"loaded. Checkpoints of this project hold only tensors and plain values. ({str(error).splitlines()[0]})"
        ) from None
    except Exception as error:  # whatever the reason, the file cannot be read as a checkpoint
        raise ValueError(f"{path} cannot be read as a checkpoint (truncated or damaged?): {error}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise ValueError(f"{path} is not a Lightning checkpoint: it has no state_dict")
    if strays := [str(name) for name, value in checkpoint["state_dict"].items() if not torch.is_tensor(value)]:
        raise ValueError(f"{path} is not a checkpoint of this project: its state_dict holds values that are not tensors "
                         f"({', '.join(strays[:3])}); it was not loaded.")
    refuse_foreign_code(checkpoint.get("hyper_parameters"), path)
    broken = non_finite_entries(checkpoint)
    if broken:
        raise ValueError(f"{path} holds non-finite values ({', '.join(broken[:3])}); it was not loaded. Resume from "
                         "an older checkpoint (--ckpt_path PATH) or start a fresh run.")
    return checkpoint


#: What exact resume reads from a checkpoint besides the parameters: Lightning's loop state,
#: optimizer and scheduler states, the callbacks' state and the samples evaluated.
RESUME_STATE = {"loops": dict, "optimizer_states": list, "lr_schedulers": list, "callbacks": dict, "global_step": int,
                "epoch": int, "samples_evaluated": int}


def refuse_incomplete_for_resume(checkpoint: Mapping[str, Any], path: str | Path) -> None:
    """``ValueError`` naming what is missing or malformed if ``checkpoint`` lacks any part of the
    state that exact resume needs (:data:`RESUME_STATE`; Lightning's fit loop in ``loops``)."""
    wrong = [key for key, kind in RESUME_STATE.items() if not isinstance(checkpoint.get(key), kind)
             or isinstance(checkpoint.get(key), bool)]
    if not wrong and not isinstance(checkpoint["loops"].get("fit_loop"), dict):
        wrong = ["loops.fit_loop"]
    if wrong:
        raise ValueError(f"{path} lacks the training state a resume needs ({', '.join(wrong)} missing or malformed); "
                         "it cannot continue a run exactly. Evaluate it with `test --ckpt_path`, or start a fresh run.")


def refuse_foreign_code(hyper_parameters: Any, path: str | Path) -> None:
    """``ValueError`` naming the file and the value if a checkpoint's hyperparameters name any
    class or instantiator but this project's (:data:`TRUSTED_CLASSES`,
    :data:`TRUSTED_INSTANTIATOR`), at any depth: judged on the strings alone, before anything
    could import the module they name."""
    if not isinstance(hyper_parameters, Mapping):
        return
    for key, value in hyper_parameters.items():
        if key in ("_class_path", "class_path") and value not in TRUSTED_CLASSES:
            raise ValueError(f"{path} names the class {value!r}, which is not one of this project's models "
                             f"({', '.join(sorted(TRUSTED_CLASSES))}); it was not loaded and nothing it names was imported.")
        if key == "_instantiator" and value != TRUSTED_INSTANTIATOR:
            raise ValueError(f"{path} names the instantiator {value!r}, not LightningCLI's ({TRUSTED_INSTANTIATOR}); "
                             "it was not loaded and nothing it names was imported.")
        if isinstance(value, Mapping):
            refuse_foreign_code(value, path)
        elif isinstance(value, list | tuple):
            for item in value:
                refuse_foreign_code(item, path)


def stored_step(path: str | Path) -> float:
    """The training step a checkpoint file holds (``global_step``), read without loading its
    tensors; ``inf`` for a file that cannot be read, so that it is chosen, and refused loudly by
    :func:`read_checkpoint`, rather than silently passed over for an older state."""
    return stored_value(path, "global_step", math.inf)


def stored_value(path: str | Path, key: str, unreadable: Any) -> Any:
    """The top-level entry ``key`` of a checkpoint file (``global_step``, ``samples_evaluated``),
    read without loading its tensors; ``unreadable`` for a file that cannot be read or lacks it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)[key]
    except Exception:  # damaged, truncated, or not a checkpoint
        return unreadable


def _damaged_member(path: str | Path) -> str | None:
    """What fails the CRC check of the zip archive that ``torch.save`` writes (``None``: intact,
    or not a zip archive, which ``torch.load`` then judges)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile:
        return None
    except (zipfile.LargeZipFile, OSError, EOFError, ValueError) as error:  # truncated or unreadable data
        return f"its archive cannot be read ({error})"
    return None if bad is None else f"the CRC check of {bad} fails"


def non_finite_entries(checkpoint: dict[str, Any]) -> list[str]:
    """Names of the parameters and optimizer-state tensors of ``checkpoint`` that hold a NaN or an infinity."""
    broken = [name for name, value in checkpoint["state_dict"].items()
              if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()]
    for i, optimizer in enumerate(checkpoint.get("optimizer_states", [])):
        for index, state in optimizer.get("state", {}).items():
            broken += [f"optimizer {i} state {index}.{key}" for key, value in state.items()
                       if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()]
    return broken


def architecture_differences(saved: Mapping[str, Any], asked: Mapping[str, Any]) -> list[str]:
    """The :data:`ARCHITECTURE` hyperparameters that both ``saved`` and ``asked`` set (not
    ``None``) and that differ between them."""
    return [key for key in ARCHITECTURE
            if saved.get(key) is not None and asked.get(key) is not None and saved[key] != asked[key]]


def check_checkpoint(checkpoint: dict[str, Any], path: str | Path, model: pl.LightningModule) -> None:
    """``ValueError`` with a message that says what is wrong if ``checkpoint`` (read from ``path``)
    holds another model class or was trained with another architecture (latent size, hidden
    units, ...) than ``model``."""
    saved, expected = checkpoint["state_dict"], model.state_dict()
    # The class name is saved since models with the same parameters (VAE, WakeSleep) exist.
    name, saved_class = type(model).__name__, checkpoint.get("model_class")
    foreign = sorted(saved.keys() - expected.keys()) or sorted(expected.keys() - saved.keys())
    if foreign or saved_class not in (None, name):
        what = f"a {saved_class}" if saved_class not in (None, name) else "a different kind of model"
        detail = f" (parameters such as {', '.join(foreign[:3])} do not match)" if foreign else ""
        raise ValueError(
            f"{path} holds {what}, not a {name}{detail}; pass a checkpoint of a {name} run, "
            "or select the model class it was trained with (--model)"
        )
    hparams = checkpoint.get("hyper_parameters", {})
    different = architecture_differences(hparams, model.hparams)
    mismatched = [k for k in saved if saved[k].shape != expected[k].shape]
    if different or mismatched:
        saved_config = ", ".join(f"{k}={hparams[k]}" for k in different) or f"other shapes of {', '.join(mismatched[:3])}"
        this_config = ", ".join(f"{k}={model.hparams[k]}" for k in different) or "others"
        raise ValueError(
            f"{path} was trained with {saved_config}, but this run has {this_config}; pass the "
            "values it was trained with (its run folder's config.yaml has them)"
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside its destination, flushes it to the disk,
    then renames it over the destination (``os.replace``: atomic on POSIX and Windows); reads
    through :func:`read_checkpoint`.

    Lightning's own writer moves a file from the system's temporary folder, which is a copy,
    not a rename, whenever that folder is on another file system: a kill during the copy leaves
    a truncated ``last.ckpt``. Here the destination always holds either the previous checkpoint
    or the new one, complete. Remote paths (``s3://`` and the like) go to Lightning's writer.

    A checkpoint the CLI has already read and checked is handed over with :meth:`preload`, so
    that Lightning's restore takes it from memory instead of reading the file again.
    """

    #: Suffix of the temporary files, ``.<name>.<random>.tmp``: what a save killed midway leaves.
    TEMPORARY = ".tmp"

    def __init__(self) -> None:
        super().__init__()
        self._preloaded: tuple[str, dict[str, Any]] | None = None

    @classmethod
    def remove_leftovers(cls, folder: Path) -> list[Path]:
        """Delete the temporary files that saves killed midway left in ``folder``; returns them.
        Only for a folder no other process writes to (the CLI holds its lock)."""
        leftovers = sorted(folder.glob(f".*.ckpt.*{cls.TEMPORARY}"))
        for path in leftovers:
            path.unlink(missing_ok=True)
        return leftovers

    def preload(self, path: str | Path, checkpoint: dict[str, Any]) -> None:
        """Serve ``checkpoint`` for the next :meth:`load_checkpoint` of ``path``."""
        self._preloaded = (str(Path(path).resolve()), checkpoint)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        if self._preloaded is not None and self._preloaded[0] == str(Path(path).resolve()):
            checkpoint, self._preloaded = self._preloaded[1], None
            return checkpoint
        try:
            return read_checkpoint(path)
        except ValueError as error:
            raise RuntimeError(str(error)) from None

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=self.TEMPORARY)
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except (OSError, RuntimeError) as error:  # a full disk, a file-size limit: the previous checkpoint is whole
            Path(temporary).unlink(missing_ok=True)
            # torch.save's archive writer reports a failed write as a RuntimeError of its own.
            if isinstance(error, RuntimeError) and not re.search(r"unexpected pos|PytorchStreamWriter failed", str(error)):
                raise
            reason = error.strerror if isinstance(error, OSError) else "the write failed: disk full or a file-size limit?"
            raise CheckpointWriteError(f"could not write the checkpoint {path} ({reason}); "
                                       "the run's previous checkpoint is unchanged. Free space (or raise the limit), "
                                       "then continue with --ckpt_path last") from None
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (the one before it is left as it was)."""


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
        self.every_n_train_steps = every_n_train_steps
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
            state_dict = relocated(state_dict, saved, self.dirpath)
        super().load_state_dict(state_dict)

    def remove_orphans(self, folder: Path, checkpoint: dict[str, Any]) -> list[Path]:
        """Delete the step checkpoints in ``folder`` that killed saves left, before a resume from
        ``checkpoint`` writes there; returns them. ``ModelCheckpoint`` writes a new step checkpoint,
        then removes the one it replaces: a kill in between leaves the old file, which the state
        saved with the new one no longer tracks. Removed: files named as this callback names them
        by default (``epoch=E-step=S.ckpt``), from steps up to the checkpoint's, and not tracked
        by its state; nothing with other names or from later steps (a resume from an older
        checkpoint keeps those). Only for a folder no other process writes to (the CLI holds its lock)."""
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if self.filename is not None or state is None:
            return []
        tracked = {os.path.basename(path) for path in [*state.get("best_k_models", {}), state.get("best_model_path"),
                                                       state.get("kth_best_model_path"), state.get("last_model_path")] if path}
        orphans = []
        for path in sorted(folder.glob("epoch=*-step=*.ckpt")):
            named = re.fullmatch(r"epoch=\d+-step=(\d+)\.ckpt", path.name)
            if named and int(named.group(1)) <= checkpoint["global_step"] and path.name not in tracked:
                path.unlink(missing_ok=True)
                orphans.append(path)
        return orphans

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
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
        on_grid = bool(self.every_n_train_steps) and step % self.every_n_train_steps == 0
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


class RunState(pl.Callback):
    """What a checkpoint carries besides the model, and what it must never carry.

    On save: refuses (``NonFiniteError``) a state with non-finite parameters, so the last
    checkpoint on disk stays the last good state; flushes the loggers first, so a run killed
    later loses no logged point that its resume will not log again; and saves the global torch,
    numpy and python RNG states. Training draws its noise and data order from generators keyed
    by position, never from the global ones; they are saved for user code (callbacks) that does.
    On load, only when training resumes: restores those RNG states (loading a model to use it
    leaves them alone).
    """

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Once per checkpoint, not per step: never write parameters that an update broke.
        if not all(torch.isfinite(p).all() for p in pl_module.parameters()):
            raise NonFiniteError(non_finite_message(pl_module, "non-finite parameters"))
        for logger in trainer.loggers:
            logger.save()
        checkpoint["rng_states"] = global_rng_states()

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING and "rng_states" in checkpoint:
            set_global_rng_states(checkpoint["rng_states"])


def global_rng_states() -> dict[str, Any]:
    """The states of torch's, numpy's and Python's global generators, as tensors and numbers
    (what ``torch.load(weights_only=True)`` reads back)."""
    _, keys, position, has_gauss, gauss = np.random.get_state()
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
