"""Run folders, ``<save_dir>/<name>/version_<n>/``: how a run is named, which checkpoint
``--ckpt_path last`` means, when a fresh run may not use a folder, and where a resumed run's
event file starts (its purge mark). The CLI applies these rules; nothing here touches a trainer."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import IO, Any

from lit_vae.callbacks.checkpoint_files import stored_step
from lit_vae.logging import END_OF_FIT_SUFFIX

try:
    import fcntl
except ImportError:  # Windows: no advisory locks of this kind; runs are not locked there
    fcntl = None

LAST = "last.ckpt"
LOCK = ".lock"
#: Set to run without folder locks, on file systems that have none.
NO_LOCKS = "LIT_VAE_NO_LOCKS"

_held: list[IO[str]] = []  # the lock files of the run folders this process writes to


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


def newest_state(folder: Path) -> Path:
    """The checkpoint in ``folder`` that holds the latest training step, by the step stored in
    each file, not by its name (``last.ckpt`` on a tie: it is written after the step checkpoint of
    the same step). A save killed between the two leaves the step checkpoint newer than
    ``last.ckpt``; a run resumed with other checkpoint settings may name its files otherwise.
    ``FileNotFoundError`` if ``folder`` holds no checkpoint."""
    candidates = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
    if not candidates:
        raise FileNotFoundError(f"no checkpoint in {folder}")
    return max(candidates, key=lambda path: (stored_step(path), path.name == LAST))


def resume_checkpoint(root: Path) -> Path:
    """What ``--ckpt_path last`` resumes: the newest state (:func:`newest_state`) of the newest
    run folder ``root/version_<n>`` that a fit wrote to (it holds a ``.lock`` or ``checkpoints/``).
    ``FileNotFoundError`` saying what to do when there is none, or when the newest run has no
    checkpoint yet (it was stopped before its first): an older run is never taken in its place."""
    newest = newest_fit(root)
    if newest is None:
        raise FileNotFoundError(
            f"--ckpt_path last: no run under {root} to resume. Start a fresh run without --ckpt_path, "
            "or give a checkpoint file with --ckpt_path PATH.")
    try:
        return newest_state(newest / "checkpoints")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"--ckpt_path last: {newest}, the newest run of {root.name}, has no checkpoint yet (it stopped before its "
            "first). Start a fresh run without --ckpt_path, or continue an older run with --ckpt_path "
            f"{root}/version_<n>/checkpoints/{LAST}.") from None


def newest_fit(root: Path) -> Path | None:
    """The newest folder ``root/version_<n>`` that a fit wrote to (it holds a ``.lock`` or
    ``checkpoints/``; ``test`` and ``predict`` leave neither); ``None`` if there is none."""
    fits = [folder for folder in root.glob("version_*") if (folder / LOCK).exists() or (folder / "checkpoints").is_dir()]
    return max(fits, key=_version_number, default=None)


def run_of_checkpoint(path: str | Path) -> tuple[Path, str, int] | None:
    """``(save_dir, name, version)`` of the run folder that holds the checkpoint at ``path``
    (``<save_dir>/<name>/version_<n>/checkpoints/<file>``); ``None`` for a file elsewhere. Where
    the file is decides, not where a symbolic link points (:func:`refuse_link_out_of_run`)."""
    run = Path(os.path.abspath(path)).parent.parent
    version = re.fullmatch(r"version_(\d+)", run.name)
    return (run.parent.parent, run.parent.name, int(version.group(1))) if version else None


def refuse_link_out_of_run(path: str | Path) -> None:
    """``ValueError`` if the checkpoint at ``path``, in a run folder, is a symbolic link to a file
    outside that run folder: resuming from it would continue another run under this one's name."""
    run = run_of_checkpoint(path)
    if run is None or not Path(path).is_symlink():
        return
    folder = version_folder(*run).resolve()
    target = Path(path).resolve()
    if not target.is_relative_to(folder):
        raise ValueError(f"{path} is a link to {target}, outside its run folder {folder}: it is not used. Give the "
                         "file itself with --ckpt_path PATH, or replace the link with a copy.")


def lock_folder(folder: Path) -> None:
    """Take an exclusive lock on ``folder`` (through ``folder/.lock``, which records the holder's
    PID) until :func:`release_folders` or the end of the process; ``BlockingIOError`` naming the
    holder if another process has it. Two fits of one run would otherwise write the same
    checkpoints and event files at once."""
    handle = take_lock(folder)
    if handle is not None:
        _held.append(handle)


def take_lock(folder: Path) -> IO[str] | None:
    """The open ``folder/.lock``, exclusively locked and holding this process's PID, for the
    caller to close when done (``None`` where locks are not available: the file then only marks
    the folder); ``BlockingIOError`` naming the holder if another process (or another handle of
    this one) has it."""
    folder.mkdir(parents=True, exist_ok=True)
    if not locking():
        (folder / LOCK).write_text(str(os.getpid()))
        return None
    handle = open(folder / LOCK, "a+")  # noqa: SIM115 - held open on purpose: the lock lives as long as it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise BlockingIOError(f"{folder} is in use by another run (PID {holder}): wait for it to end, or stop it, "
                              "before resuming this run again") from None
    except OSError as error:  # no locks on this file system (some cluster mounts)
        handle.close()
        raise LockUnavailableError(f"cannot lock {folder / LOCK}: {error.strerror} (a file system without locks?). "
                                   f"If no other process trains this run, set {NO_LOCKS}=1 to run without locks") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def lock_holder(folder: Path) -> str | None:
    """The PID (as recorded) of the process that holds ``folder``'s lock; ``None`` if no process
    holds it (or locks are not available here)."""
    if not locking() or not (folder / LOCK).exists():
        return None
    with open(folder / LOCK) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "unknown"
        except OSError:  # no locks here: nobody can be known to hold it
            return None
    return None


class LockUnavailableError(OSError):
    """The file system refuses locks for a reason other than another holder."""


def locking() -> bool:
    """Whether run folders are locked: where ``fcntl`` exists, unless ``$LIT_VAE_NO_LOCKS`` is set."""
    return fcntl is not None and not os.environ.get(NO_LOCKS)


def release_folders() -> None:
    """Release the locks this process took with :func:`lock_folder`."""
    while _held:
        _held.pop().close()


def remove_end_of_fit_events(folder: Path) -> list[Path]:
    """Delete the event files in run folder ``folder`` that hold a fit's final off-schedule
    evaluation (:func:`lit_vae.logging.log_end_of_fit`), before a resume logs into it; returns
    them. The resumed run continues the curve past that point, as the run that never stopped."""
    files = sorted(folder.glob(f"events.out.tfevents.*{END_OF_FIT_SUFFIX}"))
    for file in files:
        file.unlink()
    return files


def purge_step(checkpoint: dict[str, Any]) -> int:
    """The step at which a run resumed from ``checkpoint`` starts its new event file: TensorBoard
    then hides what the stopped run logged after the checkpoint, which the resume logs again."""
    return checkpoint.get("samples_evaluated", 0) + 1


def _version_number(folder: Path) -> int:
    number = folder.name.removeprefix("version_")
    return int(number) if number.isdigit() else -1
