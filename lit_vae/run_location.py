"""Where a command of the CLI logs and which checkpoint it reads, decided on its parsed config
before anything is built (the rules of :mod:`lit_vae.run_folder` applied to the logger's
arguments): a fresh fit goes to ``<save_dir>/<data>_nz<latent_dim>/version_<n>``; ``--ckpt_path
last`` means the newest state of the newest fit; a resume logs into its checkpoint's run folder
from a purge mark at the checkpoint; ``test``, ``validate`` and ``predict`` of a run's
checkpoint log into its ``test/``, ``validate/`` or ``predict/`` sub-folder. Each refusal is a
``ValueError`` or ``FileNotFoundError`` saying what to do."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.core import LightningModule

from lit_vae.datamodules.base import dataset_name
from lit_vae.run_folder import RunFolder, RunVersions, newest_state, purge_step, run_name

#: Where runs go (``<save_dir>/<run name>/version_<n>``) unless ``--trainer.default_root_dir`` or
#: the logger's ``save_dir`` says otherwise.
DEFAULT_SAVE_DIR = "runs"


def logger_args(logger: object) -> Namespace | None:
    """The ``init_args`` of a logger configured by class path (as the default TensorBoard one
    is); ``None`` for no logger or one given otherwise."""
    return logger.init_args if isinstance(logger, Namespace) and "init_args" in logger else None


def place_fresh(config: Namespace, logger: Namespace | None) -> bool:
    """Complete the logger's arguments as any Lightning project would, with this project's run
    names: ``--trainer.default_root_dir`` decides where runs go unless the logger's ``save_dir``
    is given; an unnamed run is named after its data, latent size and method; folders are made
    absolute (``ModelCheckpoint`` forgets which file is ``last.ckpt`` on resume unless its folder
    is spelled the same). Returns whether the user chose where the logs go."""
    if logger is None:
        return False
    chosen = logger.get("save_dir") != DEFAULT_SAVE_DIR or logger.get("version") is not None or config.trainer.default_root_dir is not None
    if config.trainer.default_root_dir is not None and logger.get("save_dir") == DEFAULT_SAVE_DIR:
        logger.save_dir = config.trainer.default_root_dir
    if logger.get("name", "") is None:
        logger.name = run_name(dataset_name(config.data.class_path), config.model.class_path, config.model.init_args.latent_dim)
    if logger.get("save_dir"):
        logger.save_dir = str(Path(logger.save_dir).resolve())
    if config.checkpoint.dirpath is not None:
        config.checkpoint.dirpath = str(Path(config.checkpoint.dirpath).resolve())
    return chosen


def refuse_used_version(logger: Namespace | None) -> None:
    """A fresh fit given ``--trainer.logger.init_args.version`` of a folder that holds a run: ``ValueError``."""
    if logger is not None and logger.get("version") is not None:
        RunFolder.of(logger.save_dir, logger.name, logger.version).refuse_used()


def find_last(config: Namespace, logger: Namespace | None) -> Path:
    """The file ``--ckpt_path last`` means: the newest state in ``--checkpoint.dirpath`` if given,
    else that of the newest fit of the logger's run name."""
    if config.checkpoint.dirpath is not None:
        try:
            return newest_state(Path(config.checkpoint.dirpath))
        except FileNotFoundError as error:
            raise FileNotFoundError(f"--ckpt_path last: {error}. Nothing to resume: start a fresh run without --ckpt_path.") from None
    if logger is None:
        raise FileNotFoundError("--ckpt_path last needs a logger or --checkpoint.dirpath to know where the run is")
    return RunVersions(Path(logger.get("save_dir", ".")) / (logger.get("name") or "")).resume_checkpoint()


def refuse_link_out_of_run(path: str | Path) -> None:
    """``ValueError`` if the checkpoint at ``path``, in a run folder, links to a file outside it."""
    folder = RunFolder.of_checkpoint(path)
    if folder is not None:
        folder.refuse_link_out(path)


def place_resume(config: Namespace, logger: Namespace | None, checkpoint: dict[str, Any]) -> None:
    """A fit resumed from ``checkpoint`` logs into the run folder that holds it (unless
    ``--checkpoint.dirpath`` is given), its new event file starting with a purge mark there."""
    if logger is None:
        return
    folder = RunFolder.of_checkpoint(config.ckpt_path)
    if folder is not None and config.checkpoint.dirpath is None:
        logger.save_dir, logger.name, logger.version = folder.logger_location()
    if "purge_step" in logger:  # TensorBoardLogger's (its SummaryWriter's) argument
        logger.purge_step = purge_step(checkpoint)


def place_evaluation(config: Namespace, logger: Namespace, subcommand: str) -> None:
    """``test``, ``validate`` and ``predict`` of a run's checkpoint log into the run folder's
    sub-folder named by the subcommand (TensorBoard shows it beside the training curves, at the
    checkpoint's samples evaluated) rather than into a new ``version_<n>``; the run's own files
    are left as they are."""
    folder = RunFolder.of_checkpoint(config.ckpt_path)
    if folder is not None:
        logger.save_dir, logger.name, logger.version = str(folder.path), subcommand, ""


class SaveConfigOnce(SaveConfigCallback):
    """Saves the config as ``config.yaml`` in the run folder (:meth:`RunFolder.of_trainer`); a
    resumed run, which shares the folder, saves its own as ``config.resume-<k>.yaml``
    (:meth:`RunFolder.next_config_name`). Lightning saves it under ``trainer.log_dir``, which for
    loggers other than TensorBoard and CSV is the ``save_dir`` of all their runs: the file name is
    given relative to it."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.already_saved and self.save_to_log_dir:
            folder = RunFolder.writing_to(trainer)
            if trainer.is_global_zero:
                folder.path.mkdir(parents=True, exist_ok=True)
            name = os.path.relpath(folder.path / folder.next_config_name(), trainer.log_dir or trainer.default_root_dir)
            self.config_filename = trainer.strategy.broadcast(name)
        super().setup(trainer, pl_module, stage)
