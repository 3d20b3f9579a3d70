"""Run folders, ``<save_dir>/<name>/version_<n>/``: how a run is named, which checkpoint
``--ckpt_path last`` means, when a fresh run may not use a folder, and where a resumed run's
event file starts (its purge mark). The CLI applies these rules; nothing here touches a trainer."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks of this kind; runs are not locked there
    fcntl = None

LAST = "last.ckpt"
LOCK = ".lock"


def dataset_name(class_path: str) -> str:
    """The data set a data module class is for, from its name: ``"MNIST"`` for
    ``lit_vae.datamodules.MNISTDataModule``, ``"Frey Face"`` for ``...FreyFaceDataModule``."""
    name = class_path.rpartition(".")[2].removesuffix("DataModule")
    return re.sub(r"(?<!^)(?=[A-Z][a-z])", " ", name)


def run_name(data_class_path: str, model_class_path: str, latent_dim: int) -> str:
    """``<data>_nz<latent_dim>`` for AEVB, e.g. ``mnist_nz20``; a baseline's name follows, e.g.
    ``mnist_nz20_wake_sleep``."""
    name = dataset_name(data_class_path).lower().replace(" ", "_")
    method = model_class_path.rpartition(".")[2]
    suffix = "" if method == "VAE" else "_" + re.sub(r"(?<=[a-z])(?=[A-Z])", "_", method).lower()
    return f"{name}_nz{latent_dim}{suffix}"


def version_folder(save_dir: str | Path, name: str | None, version: int | str) -> Path:
    """The folder of one run: ``<save_dir>/<name>/version_<n>`` (or ``.../<version>`` for a string)."""
    return Path(save_dir) / (name or "") / (version if isinstance(version, str) else f"version_{version}")


def refuse_used_version(folder: Path) -> None:
    """``ValueError`` if ``folder`` already holds a run: a fresh fit logging there would mix its
    curves and checkpoints with that run's."""
    if folder.is_dir() and any(folder.iterdir()):
        raise ValueError(
            f"--trainer.logger.init_args.version: {folder} already holds a run. Continue it with "
            "--ckpt_path last, or leave out the version to start a new one in the next version folder."
        )


def newest_last_checkpoint(root: Path) -> Path:
    """``last.ckpt`` of the newest ``version_<n>`` under ``root`` that has one;
    ``FileNotFoundError`` with what to do instead when none has."""
    for candidate in sorted(root.glob(f"version_*/checkpoints/{LAST}"), key=_version_number, reverse=True):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"--ckpt_path last: no {LAST} in {root}/version_*/checkpoints. Nothing to resume: start a fresh run "
        "without --ckpt_path, or give a checkpoint file with --ckpt_path PATH."
    )


def run_of_checkpoint(path: str | Path) -> tuple[Path, str, int] | None:
    """``(save_dir, name, version)`` of the run folder that holds the checkpoint at ``path``
    (``<save_dir>/<name>/version_<n>/checkpoints/<file>``); ``None`` for a file elsewhere."""
    run = Path(path).resolve().parent.parent
    version = re.fullmatch(r"version_(\d+)", run.name)
    return (run.parent.parent, run.parent.name, int(version.group(1))) if version else None


def lock_folder(folder: Path) -> IO[str] | None:
    """An exclusive lock on ``folder`` (through ``folder/.lock``, which records the holder's PID),
    held while the returned file stays open; ``BlockingIOError`` naming the holder if another
    process has it. Two resumes of one run would otherwise write the same checkpoints and event
    files at once."""
    if fcntl is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK, "a+")  # noqa: SIM115 - held open on purpose: the lock lives as long as it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise BlockingIOError(f"{folder} is in use by another run (PID {holder}): wait for it to end, or stop it, "
                              "before resuming this run again") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def purge_step(checkpoint: dict[str, Any]) -> int:
    """The step at which a run resumed from ``checkpoint`` starts its new event file: TensorBoard
    then hides what the stopped run logged after the checkpoint, which the resume logs again."""
    return checkpoint.get("samples_evaluated", 0) + 1


def _version_number(path: Path) -> int:
    return int(path.parent.parent.name.removeprefix("version_"))
