"""Checkpoint files, read and written safely: every read is ``torch.load(weights_only=True)``
(:func:`read_checkpoint`, and :func:`lit_vae.run_folder.stored_value` for one entry), so a file whose unpickling
would run code is refused, never executed; a file that names code (a class or instantiator other
than this project's), is damaged, holds non-finite or non-tensor state, or lacks what exact
resume needs is refused in one line; and every write goes through a temporary file, so a kill or
a full disk leaves the previous checkpoint whole.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_vae.atomic import atomic_write

#: Hyperparameters that fix the shapes of the networks.
ARCHITECTURE = ("input_dim", "latent_dim", "hidden_dim", "hidden_dims", "likelihood")
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
    """Writes a checkpoint with :func:`lit_vae.atomic.atomic_write`; reads through
    :func:`read_checkpoint`.

    Lightning's own writer moves a file from the system's temporary folder, which is a copy,
    not a rename, whenever that folder is on another file system: a kill during the copy leaves
    a truncated ``last.ckpt``. Here the destination always holds either the previous checkpoint
    or the new one, complete. Remote paths (``s3://`` and the like) go to Lightning's writer.

    A checkpoint the CLI has already read and checked is handed over with :meth:`preload`, so
    that Lightning's restore takes it from memory instead of reading the file again.
    """

    def __init__(self) -> None:
        super().__init__()
        self._preloaded: tuple[str, dict[str, Any]] | None = None

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
        try:
            atomic_write(path, lambda file: torch.save(checkpoint, file))
        except (OSError, RuntimeError) as error:  # a full disk, a file-size limit: the previous checkpoint is whole
            # torch.save's archive writer reports a failed write as a RuntimeError of its own.
            if isinstance(error, RuntimeError) and not re.search(r"unexpected pos|PytorchStreamWriter failed", str(error)):
                raise
            reason = error.strerror if isinstance(error, OSError) else "the write failed: disk full or a file-size limit?"
            raise CheckpointWriteError(f"could not write the checkpoint {path} ({reason}); "
                                       "the run's previous checkpoint is unchanged. Free space (or raise the limit), "
                                       "then continue with --ckpt_path last") from None


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (the one before it is left as it was)."""
