"""``python train.py`` / ``lit-vae``: LightningCLI with the paper's defaults.

Runs go to ``runs/<data>_nz<latent_dim>/version_<n>/`` (TensorBoard events, ``config.yaml``,
``checkpoints/``). ``fit --ckpt_path last`` resumes the newest version of the run and keeps
logging into its folder, so the curves continue where they stopped.
"""

from __future__ import annotations

import re
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.core import LightningModule
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from callbacks.checkpoint import RunCheckpoint
from callbacks.images import ImagesCallback, manifold_points
from callbacks.lower_bound import LowerBoundCallback
from callbacks.marginal_likelihood import MarginalLikelihoodCallback
from datamodules.base import dataset_name
from lit_vae.checkpoint_io import AtomicCheckpointIO
from lit_vae.checkpoints import check_checkpoint, read_checkpoint
from lit_vae.generative import GenerativeModel, NonFiniteError

#: 10^7 training samples at M = 100: the right end of Figure 2.
DEFAULT_MAX_STEPS = 100_000

TRAINER_DEFAULTS = {
    "accelerator": "cpu",
    "devices": 1,
    "max_steps": DEFAULT_MAX_STEPS,
    "check_val_every_n_epoch": 10,
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        # No placeholder hp_metric: the lower bound is logged against samples evaluated.
        "init_args": {"save_dir": "runs", "name": None, "default_hp_metric": False},
    },
}


class SaveConfigOnce(SaveConfigCallback):
    """Saves the config as ``config.yaml`` in the run folder; a resumed run, which shares the
    folder, saves its own as ``config.resume-<n>.yaml`` instead of clashing with the first."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.already_saved and self.save_to_log_dir:
            log_dir = Path(trainer.log_dir or ".")
            name, n = "config.yaml", 0
            while (log_dir / name).exists():
                n += 1
                name = f"config.resume-{n}.yaml"
            self.config_filename = trainer.strategy.broadcast(name)
        super().setup(trainer, pl_module, stage)


class VAECLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(LowerBoundCallback, "lower_bound")
        parser.add_lightning_class_args(MarginalLikelihoodCallback, "marginal_likelihood")
        parser.add_lightning_class_args(ImagesCallback, "images")
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.add_lightning_class_args(TQDMProgressBar, "progress_bar")
        parser.set_defaults({
            "model": {"class_path": "lit_vae.VAE"},
            "data": {"class_path": "datamodules.MNISTDataModule"},
            "checkpoint.save_last": True,
            "checkpoint.every_n_train_steps": 2_000,
            # Refreshing the bar costs ~0.2 ms; every 50 steps that is well under 1%.
            "progress_bar.refresh_rate": 50,
        })
        parser.link_arguments("data", "model.init_args.input_dim", compute_fn=lambda data: data.input_dim, apply_on="instantiate")
        parser.link_arguments("data", "model.init_args.train_size", compute_fn=lambda data: data.train_size, apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger = logger_args(config.trainer.logger)
        if logger is not None and logger.get("name", "") is None:
            logger.name = run_name(config)
        # ModelCheckpoint saves its folder in each checkpoint and, on resume, forgets which file
        # is last.ckpt unless the folder is spelled the same: absolute paths, whatever the cwd.
        if logger is not None and logger.get("save_dir"):
            logger.save_dir = str(Path(logger.save_dir).resolve())
        if config.checkpoint.dirpath is not None:
            config.checkpoint.dirpath = str(Path(config.checkpoint.dirpath).resolve())
        if self.subcommand == "fit" and config.ckpt_path is not None:
            config.ckpt_path = self._resume(config, logger)
        elif self.subcommand == "fit":
            self._refuse_used_version(logger)

    def _refuse_used_version(self, logger: Namespace | None) -> None:
        """A fresh fit told to log into an existing run folder (``--trainer.logger.init_args.version``)
        would mix its curves and checkpoints with that run's: refuse before anything is written."""
        if logger is None or logger.get("version") is None:
            return
        version = logger.version
        folder = Path(logger.save_dir) / (logger.name or "") / (
            version if isinstance(version, str) else f"version_{version}")
        if folder.is_dir() and any(folder.iterdir()):
            self.parser.error(
                f"--trainer.logger.init_args.version: {folder} already holds a run. Continue it with "
                "--ckpt_path last, or leave out the version to start a new one in the next version folder."
            )

    def _resume(self, config: Namespace, logger: Namespace | None) -> str:
        """Resolve ``--ckpt_path last`` to the newest run's ``last.ckpt`` and log into that run."""
        path = config.ckpt_path
        if path == "last":
            path = find_last_checkpoint(config, logger)
        elif not Path(path).is_file():
            self.parser.error(f"--ckpt_path: no checkpoint file at {path}")
        # <save_dir>/<name>/version_<n>/checkpoints/<file>: keep logging into that run's folder.
        run = Path(path).resolve().parent.parent
        version = re.fullmatch(r"version_(\d+)", run.name)
        if version and logger is not None and config.checkpoint.dirpath is None:
            logger.save_dir = str(run.parent.parent)
            logger.name = run.parent.name
            logger.version = int(version.group(1))
        return str(path)

    def _parse_ckpt_path(self) -> None:
        """LightningCLI reads the model's hyperparameters from a ``--ckpt_path`` file here; refuse
        an unreadable file first, with a message instead of torch's internal error."""
        path = self.config[self.config.subcommand].get("ckpt_path") if self.config.get("subcommand") else None
        if path is not None and Path(path).is_file():
            try:
                read_checkpoint(path)
            except ValueError as error:
                self.parser.error(f"--ckpt_path: {error}")
        super()._parse_ckpt_path()

    def before_fit(self) -> None:
        """Refuse a bad ``--ckpt_path``, a model that cannot run on this many processes, or picture
        settings that do not fit the model, before the trainer writes anything (logs, config,
        checkpoints)."""
        path = self.config[self.subcommand].ckpt_path
        # "best", "last" (outside fit) and the like are names Lightning resolves itself.
        if path is not None and Path(path).is_file():
            try:
                checkpoint = check_checkpoint(path, self.model)
            except ValueError as error:
                self.parser.error(f"--ckpt_path: {error}")
            if self.subcommand == "fit":
                for logger in self.trainer.loggers:
                    if isinstance(logger, TensorBoardLogger):
                        # The new event file starts with a purge mark: TensorBoard hides what a
                        # killed run logged after this checkpoint, which the resume logs again.
                        logger._kwargs["purge_step"] = checkpoint.get("samples_evaluated", 0) + 1
        try:
            self.model.check_world_size(self.trainer.world_size)
        except ValueError as error:
            self.parser.error(str(error))
        for callback in self.trainer.callbacks:
            if isinstance(callback, ImagesCallback):
                try:
                    manifold_points(callback.manifold_size, self.model.hparams.latent_dim, callback.manifold_dims)
                except ValueError as error:
                    self.parser.error(f"--images.{error}")

    before_validate = before_test = before_predict = before_fit

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as error:  # argument checks in the constructors: say which, no traceback
            self.parser.error(str(error))
        if type(self.trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not one the user chose
            self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()


def run_name(config: Namespace) -> str:
    """``<data>_nz<latent_dim>`` for AEVB, e.g. ``mnist_nz20``; a baseline's name follows, e.g.
    ``mnist_nz20_wake_sleep``."""
    name = dataset_name(config.data.class_path).lower().replace(" ", "_")
    method = config.model.class_path.rpartition(".")[2]
    suffix = "" if method == "VAE" else "_" + re.sub(r"(?<=[a-z])(?=[A-Z])", "_", method).lower()
    return f"{name}_nz{config.model.init_args.latent_dim}{suffix}"


def logger_args(logger: object) -> Namespace | None:
    """The ``init_args`` of a logger configured by class path (as the default TensorBoard one
    is); ``None`` for no logger or one given otherwise."""
    return logger.init_args if isinstance(logger, Namespace) and "init_args" in logger else None


def find_last_checkpoint(config: Namespace, logger: Namespace | None) -> Path:
    """``last.ckpt`` of the newest version of this run (or in ``--checkpoint.dirpath``);
    ``logger`` is the logger's ``init_args`` (:func:`logger_args`)."""
    if config.checkpoint.dirpath is not None:
        candidates = [Path(config.checkpoint.dirpath) / "last.ckpt"]
        where = str(config.checkpoint.dirpath)
    elif logger is not None:
        root = Path(logger.get("save_dir", ".")) / (logger.get("name") or "")
        versions = sorted(root.glob("version_*/checkpoints/last.ckpt"), key=lambda p: int(p.parent.parent.name[8:]))
        candidates = versions[::-1]
        where = f"{root}/version_*/checkpoints"
    else:
        raise SystemExit("--ckpt_path last needs a logger or --checkpoint.dirpath to know where the run is")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SystemExit(
        f"--ckpt_path last: no last.ckpt in {where}. Nothing to resume: start a fresh run without "
        "--ckpt_path, or give a checkpoint file with --ckpt_path PATH."
    )


def cli(args: list[str] | None = None) -> VAECLI:
    """Build and run the CLI on ``args`` (default: the command line); returns it, with its trainer."""
    return VAECLI(
        GenerativeModel,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=TRAINER_DEFAULTS,
        save_config_callback=SaveConfigOnce,
        args=args,
    )


def main() -> None:
    """Entry point of ``train.py`` and the ``lit-vae`` console script."""
    try:
        cli()
    except NonFiniteError as error:  # a numerical stop, explained in one line: no traceback
        raise SystemExit(f"error: {error}") from None
