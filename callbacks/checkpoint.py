"""Checkpoints, in one place: reading them safely and checking them against the run, writing
them atomically, writing ``last.ckpt`` at the final step, and the run state they carry besides
the model (global RNG states, flushed logs) with the refusal to save a non-finite state.

Every read goes through :func:`read_checkpoint`, with ``torch.load(weights_only=True)``: the
checkpoints hold only tensors and plain values, so a file whose unpickling would run code is
refused, never executed.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn

from lit_vae.interfaces import NonFiniteError, non_finite_message

#: Hyperparameters that fix the shapes of the networks.
ARCHITECTURE = ("input_dim", "latent_dim", "hidden_dim", "likelihood")


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
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint: it has no state_dict")
    broken = non_finite_entries(checkpoint)
    if broken:
        raise ValueError(f"{path} holds non-finite values ({', '.join(broken[:3])}); it was not loaded. Resume from "
                         "an older checkpoint (--ckpt_path PATH) or start a fresh run.")
    return checkpoint


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
    different = [k for k in ARCHITECTURE if k in hparams and k in model.hparams and hparams[k] != model.hparams[k]]
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
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint``, plus ``last.ckpt`` written after the step that reaches
    ``max_steps`` when that step is not an ``every_n_train_steps`` point.

    Lightning writes ``last.ckpt`` at the end of training only if it wrote none before, so a run
    of 250 steps checkpointed every 100 kept the step-200 state: an evaluation of ``last.ckpt``
    saw an older model and a resume redid 50 steps. The final checkpoint is written after the
    step, like every other, so a resume from it continues exactly. (A run stopped by an error or
    Ctrl-C does not get one: its last checkpoint stays as it was.) Written through the public
    ``Trainer.save_checkpoint``; ModelCheckpoint has no public call for "save last now".

    Args:
        every_n_train_steps: as in ``ModelCheckpoint``.
        **kwargs: ``ModelCheckpoint``'s other arguments.
    """

    def __init__(self, every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(every_n_train_steps=every_n_train_steps, **kwargs)
        self.every_n_train_steps = every_n_train_steps

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        step = trainer.global_step
        on_grid = bool(self.every_n_train_steps) and step % self.every_n_train_steps == 0
        if self.save_last and 0 <= trainer.max_steps <= step and not on_grid and self.dirpath is not None:
            path = os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)
            trainer.save_checkpoint(path)
            self.last_model_path = path


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
