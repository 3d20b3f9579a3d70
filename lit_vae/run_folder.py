"""A run on disk, in one place. A run name's folder ``<save_dir>/<name>/`` (:class:`RunVersions`)
holds one folder per fit, ``version_<n>/`` (:class:`RunFolder`): TensorBoard events,
``config.yaml`` (``config.resume-<k>.yaml`` for each resume), ``checkpoints/``, ``progress.json``,
the ``.lock`` of the process that writes it, and the ``test/``, ``validate/`` and ``predict/``
sub-folders that evaluations of its checkpoints log into. Here: how runs are named and found,
which checkpoint ``--ckpt_path last`` means, when a fresh fit may not use a folder, the lock, and
what a resume clears first. A trainer is only read, for where its logger writes."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lit_vae.atomic import atomic_write, remove_leftovers
from lit_vae.folder_lock import LOCK, hold
from lit_vae.logging import CSV_METRICS, CSV_METRICS_BEFORE_RESUME, END_OF_FIT_SUFFIX

if TYPE_CHECKING:
    import lightning.pytorch as pl

LAST = "last.ckpt"
PROGRESS = "progress.json"
#: The sub-folders of a run folder that ``test``, ``validate`` and ``predict`` of its checkpoints log into.
EVALUATION_FOLDERS = ("test", "validate", "predict")
#: How Lightning's ``ModelCheckpoint`` names a step checkpoint by default.
STEP_CHECKPOINT = re.compile(r"epoch=\d+-step=(\d+)\.ckpt")


def run_name(dataset: str, model_class_path: str, latent_dim: int) -> str:
    """``<data set>_nz<latent_dim>`` for AEVB, e.g. ``mnist_nz20`` for ``"MNIST"``; a baseline's
    name follows, e.g. ``mnist_nz20_wake_sleep``."""
    method = model_class_path.rpartition(".")[2]
    suffix = "" if method == "VAE" else "_" + re.sub(r"(?<=[a-z])(?=[A-Z])", "_", method).lower()
    return f"{dataset.lower().replace(' ', '_')}_nz{latent_dim}{suffix}"


@dataclass(frozen=True)
class RunFolder:
    """One fit's folder, ``<save_dir>/<name>/version_<n>``."""

    path: Path

    @classmethod
    def of(cls, save_dir: str | Path, name: str | None, version: int | str | None) -> RunFolder:
        """``<save_dir>/<name>/version_<n>`` (or ``.../<version>`` for a string), as Lightning's
        ``ModelCheckpoint`` places a logger's ``checkpoints/``."""
        return cls(Path(save_dir) / (name or "") / (version if isinstance(version, str) else f"version_{version}"))

    @classmethod
    def of_trainer(cls, trainer: pl.Trainer) -> RunFolder | None:
        """The folder of ``trainer``'s run, ``None`` without a logger: where Lightning's
        ``ModelCheckpoint`` puts ``checkpoints/``, ``<save_dir>/<name>/<version>`` of the first
        logger. For TensorBoard and CSV that is their ``log_dir``; for MLflow
        ``<save_dir>/<experiment id>/<run id>`` and for W&B ``<save_dir>/<project>/<run id>``, where
        ``trainer.log_dir`` is the ``save_dir`` all their runs share. A logger's run not made yet
        (W&B's, whose id is its version) is made here, as Lightning's setup makes it. A broadcast
        from rank 0 under DDP (a logger's next version is rank 0's): every rank calls it."""
        if not trainer.loggers:
            return None
        logger = trainer.loggers[0]
        if logger.version is None and trainer.is_global_zero:  # W&B's run id comes with its run
            _ = getattr(logger, "experiment", None)  # the run, made as Lightning's setup makes it
        path = cls.of(logger.save_dir or trainer.default_root_dir, logger.name, logger.version).path
        return cls(Path(trainer.strategy.broadcast(str(path))))

    @classmethod
    def writing_to(cls, trainer: pl.Trainer) -> RunFolder:
        """Where ``trainer``'s run writes its files (config, pictures, predictions): its folder
        (:meth:`of_trainer`), or without a logger ``default_root_dir``, where ``ModelCheckpoint``
        then puts ``checkpoints/``."""
        return cls.of_trainer(trainer) or cls(Path(trainer.default_root_dir))

    @classmethod
    def of_checkpoint(cls, path: str | Path) -> RunFolder | None:
        """The run folder that holds the checkpoint at ``path`` (``.../version_<n>/checkpoints/<file>``);
        ``None`` for a file elsewhere. Where the file is decides, not where a link points."""
        folder = Path(os.path.abspath(path)).parent.parent
        return cls(folder) if re.fullmatch(r"version_\d+", folder.name) else None

    def logger_location(self) -> tuple[str, str, int]:
        """``(save_dir, name, version)``: a logger's arguments for logging into this folder."""
        return str(self.path.parent.parent), self.path.parent.name, int(self.path.name.removeprefix("version_"))

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def is_fit(self) -> bool:
        """Whether a fit wrote here (it leaves a ``.lock`` or ``checkpoints/``; ``test`` and
        ``predict`` leave neither)."""
        return (self.path / LOCK).exists() or self.checkpoints.is_dir()

    def refuse_used(self) -> None:
        """``ValueError`` if the folder already holds a run: a fresh fit logging there would mix
        its curves and checkpoints with that run's."""
        if self.path.is_dir() and any(self.path.iterdir()):
            raise ValueError(
                f"--trainer.logger.init_args.version: {self.path} already holds a run. Continue it with "
                "--ckpt_path last, or leave out the version to start a new one in the next version folder.")

    def refuse_link_out(self, checkpoint: str | Path) -> None:
        """``ValueError`` if ``checkpoint``, in this folder, is a symbolic link to a file outside
        it: resuming from it would continue another run under this one's name."""
        target = Path(checkpoint).resolve()
        if Path(checkpoint).is_symlink() and not target.is_relative_to(self.path.resolve()):
            raise ValueError(f"{checkpoint} is a link to {target}, outside its run folder {self.path.resolve()}: it is not "
                             "used. Give the file itself with --ckpt_path PATH, or replace the link with a copy.")

    def next_config_name(self) -> str:
        """``config.yaml`` for the first fit, ``config.resume-<k>.yaml`` for the k-th resume."""
        name, k = "config.yaml", 0
        while (self.path / name).exists():
            k += 1
            name = f"config.resume-{k}.yaml"
        return name

    @staticmethod
    def is_evaluation(folder: Path) -> bool:
        """Whether ``folder`` is where an evaluation of a run's checkpoint logs: ``.../version_<n>/<subcommand>``."""
        return folder.name in EVALUATION_FOLDERS and re.fullmatch(r"version_\d+", folder.parent.name) is not None

    def progress(self) -> dict[str, Any] | None:
        """What ``progress.json`` holds; ``None`` where there is none, or it cannot be read, or it
        is not what :meth:`write_progress` writes (a number under each key)."""
        try:
            progress = json.loads((self.path / PROGRESS).read_text())
        except (OSError, ValueError):
            return None
        keys = ("samples_evaluated", "max_steps", "global_step", "seconds", "samples_per_second")
        numbers = isinstance(progress, dict) and all(isinstance(progress.get(key), int | float) for key in keys)
        return progress if numbers and not any(isinstance(progress[key], bool) for key in keys) else None

    def write_progress(self, progress: dict[str, float]) -> None:
        atomic_write(self.path / PROGRESS, lambda file: file.write(json.dumps(progress).encode()))

    def lock(self) -> None:
        """Hold the folder's lock (:func:`lit_vae.folder_lock.hold`) until
        :func:`lit_vae.folder_lock.release_held` or the end of the process: two fits of one run
        would otherwise write the same files at once."""
        hold(self.path)

    def clear_for_resume(self, checkpoints: Path, step: int, tracked: set[str] | None) -> list[Path]:
        """Before a resume from the checkpoint of ``step`` in ``checkpoints`` writes there, delete
        what killed writes left: temporary files (of checkpoints and ``progress.json``); step checkpoints (Lightning's default names) up
        to ``step`` that its checkpoint callback no longer tracks (it writes the new one, then
        removes the one it replaces; ``tracked`` is ``None`` where it names files otherwise, and
        nothing is removed); and the previous fit's end-of-fit event file
        (:func:`lit_vae.logging.log_end_of_fit`), which the resumed run logs past. Returns them.
        A CSV logger's ``metrics.csv`` is moved aside, as Lightning's CSV writer deletes it when
        it starts (a copy moved aside by an earlier resume that was stopped before it put the
        rows back is the one kept). Only while this process holds the folder's lock."""
        removed = remove_leftovers(checkpoints, "*.ckpt") + remove_leftovers(self.path, PROGRESS)
        if tracked is not None:
            removed += [path for path in sorted(checkpoints.glob("epoch=*-step=*.ckpt")) if path.name not in tracked
                        and (named := STEP_CHECKPOINT.fullmatch(path.name)) and int(named.group(1)) <= step]
        removed += sorted(self.path.glob(f"events.out.tfevents.*{END_OF_FIT_SUFFIX}"))
        for path in removed:
            path.unlink(missing_ok=True)
        metrics, before = self.path / CSV_METRICS, self.path / CSV_METRICS_BEFORE_RESUME
        if metrics.is_file() and before.exists():
            metrics.unlink()
        elif metrics.is_file():
            metrics.replace(before)
        return removed


def stored_step(path: str | Path) -> float:
    """The training step a checkpoint file holds (``global_step``), read without loading its
    tensors; ``inf`` for a file that cannot be read, so that it is chosen, and refused loudly by
    :func:`lit_vae.callbacks.checkpoint_files.read_checkpoint`, rather than silently passed over for an older state."""
    return stored_value(path, "global_step", math.inf)


def stored_value(path: str | Path, key: str, unreadable: Any) -> Any:
    """The top-level entry ``key`` of a checkpoint file (``global_step``, ``samples_evaluated``),
    read without loading its tensors; ``unreadable`` for a file that cannot be read or lacks it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)[key]
    except Exception:  # damaged, truncated, or not a checkpoint
        return unreadable


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


@dataclass(frozen=True)
class RunVersions:
    """A run name's folder, ``<save_dir>/<name>``: its fits' version folders (and, in a sweep,
    its ``train.log`` and the sweep's lock on it)."""

    root: Path

    def newest_fit(self) -> RunFolder | None:
        """The newest version folder a fit wrote to (:meth:`RunFolder.is_fit`); ``None`` if none."""
        fits = [RunFolder(path) for path in self.root.glob("version_*") if RunFolder(path).is_fit()]
        return max(fits, key=lambda folder: _version_number(folder.path), default=None)

    def resume_checkpoint(self) -> Path:
        """What ``--ckpt_path last`` resumes: the newest state (:func:`newest_state`) of the newest
        fit. ``FileNotFoundError`` saying what to do when there is none, or when the newest fit has
        no checkpoint yet (it stopped before its first): an older run is never taken instead."""
        newest = self.newest_fit()
        if newest is None:
            raise FileNotFoundError(
                f"--ckpt_path last: no run under {self.root} to resume. Start a fresh run without --ckpt_path, "
                "or give a checkpoint file with --ckpt_path PATH.")
        try:
            return newest_state(newest.checkpoints)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"--ckpt_path last: {newest.path}, the newest run of {self.root.name}, has no checkpoint yet (it stopped "
                "before its first). Start a fresh run without --ckpt_path, or continue an older run with --ckpt_path "
                f"{self.root}/version_<n>/checkpoints/{LAST}.") from None

    def checkpoint(self) -> Path | None:
        """:meth:`resume_checkpoint`, or ``None`` where there is none (the run starts afresh)."""
        try:
            return self.resume_checkpoint()
        except FileNotFoundError:
            return None


def purge_step(checkpoint: dict[str, Any]) -> int:
    """The step at which a run resumed from ``checkpoint`` starts its new event file: TensorBoard
    then hides what the stopped run logged after the checkpoint, which the resume logs again."""
    return checkpoint.get("samples_evaluated", 0) + 1


def _version_number(folder: Path) -> int:
    number = folder.name.removeprefix("version_")
    return int(number) if number.isdigit() else -1
