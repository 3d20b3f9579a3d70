"""``python train.py``, ``python -m lit_vae`` and ``lit-vae``: LightningCLI with the paper's
defaults. The composition root: the one module that puts models, data, callbacks and the run
folder (``lit_vae.run_location``, ``lit_vae.run_folder``) together.

Runs go to ``runs/<data>_nz<latent_dim>/version_<n>/`` (TensorBoard events, ``config.yaml``,
``checkpoints/``). ``fit --ckpt_path last`` resumes the newest version of the run and keeps
logging into its folder, so the curves continue where they stopped; ``test``, ``validate`` and
``predict`` of a run's checkpoint log into its ``test/``, ``validate/`` or ``predict/``
sub-folder. ``--config NAME`` takes a config shipped with the package (``mnist``, ``frey_face``,
``figure3_n1000``, ...) when no file of that name exists.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelSummary, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import MisconfigurationException

# baselines imported so that `--model WakeSleep` / `--model MCEM` resolve by class name, as VAE does.
from lit_vae import baselines  # noqa: F401
from lit_vae.callbacks.checkpoint import EVERY_N_TRAIN_STEPS, RunCheckpoint, RunState
from lit_vae.callbacks.checkpoint_files import (
    AtomicCheckpointIO,
    read_checkpoint,
    refuse_incomplete_for_resume,
)
from lit_vae.callbacks.images import ImagesCallback
from lit_vae.callbacks.lower_bound import LowerBoundCallback
from lit_vae.callbacks.marginal_likelihood import MarginalLikelihoodCallback
from lit_vae.callbacks.predictions import PredictionWriter
from lit_vae.callbacks.progress import SamplesProgressBar
from lit_vae.callbacks.summary import ParameterSummary
from lit_vae.console import OneLineErrors, description, fit_summary, shipped_configs, silence_what_does_not_apply, trainer_error
from lit_vae.folder_lock import LockUnavailableError, release_held
from lit_vae.generative import GenerativeModel
from lit_vae.refusals import check_before_run, check_steps, refuse_what_would_be_replaced, what_the_file_brings
from lit_vae.run_folder import RunFolder
from lit_vae.run_location import (
    DEFAULT_SAVE_DIR,
    SaveConfigOnce,
    find_last,
    logger_args,
    place_evaluation,
    place_fresh,
    place_resume,
    refuse_link_out_of_run,
    refuse_used_version,
)

#: 10^7 training samples at M = 100: the right end of Figure 2.
DEFAULT_MAX_STEPS = 100_000

#: The seed of a run that names none (``--seed_everything``): always a number, which the run's
#: ``config.yaml`` records, where Lightning's own default would warn "No seed found" and use 0.
DEFAULT_SEED = 0

TRAINER_DEFAULTS = {
    "accelerator": "cpu",
    "devices": 1,
    "max_steps": DEFAULT_MAX_STEPS,
    "check_val_every_n_epoch": 10,
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        # No placeholder hp_metric: the lower bound is logged against samples evaluated.
        "init_args": {"save_dir": DEFAULT_SAVE_DIR, "name": None, "default_hp_metric": False},
    },
}


class VAECLI(LightningCLI):
    """The paper's callbacks and defaults, run naming, ``--ckpt_path last``, and every check
    that can refuse a run made before anything is written."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(LowerBoundCallback, "lower_bound")
        parser.add_lightning_class_args(MarginalLikelihoodCallback, "marginal_likelihood")
        parser.add_lightning_class_args(ImagesCallback, "images")
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_lightning_class_args(RunState, "run_state")
        # Configurable like the callbacks above, but added by instantiate_trainer, which leaves
        # them out where the Trainer's own flags say so.
        parser.add_class_arguments(RunCheckpoint, "checkpoint", instantiate=True)
        parser.add_class_arguments(SamplesProgressBar, "progress_bar", instantiate=True)
        parser.set_defaults({
            "model": {"class_path": "lit_vae.VAE"},
            "data": {"class_path": "lit_vae.datamodules.MNISTDataModule"},
            "checkpoint.save_last": True,
            "checkpoint.every_n_train_steps": EVERY_N_TRAIN_STEPS,
            # Never fork last-v1.ckpt beside last.ckpt (a resume with other checkpoint settings, or
            # from a moved run folder, would): the next `--ckpt_path last` would take the stale one.
            "checkpoint.enable_version_counter": False,
            # A refresh costs a fraction of a millisecond: every 50 steps it is lost in the noise.
            "progress_bar.refresh_rate": 50,
        })
        parser.add_argument("--allow_other_optimizer", type=bool, default=False,
                            help="let --optimizer / --lr_scheduler replace the paper's Adagrad and its accumulate-only warm-up")
        parser.link_arguments("data", "model.init_args.input_dim", compute_fn=lambda data: data.input_dim, apply_on="instantiate")
        parser.link_arguments("data", "model.init_args.train_size", compute_fn=lambda data: data.train_size, apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then read a ``--ckpt_path`` file once, safely (``weights_only=True``), before
        LightningCLI reads the model's hyperparameters from it: a file that cannot be read or that
        would need arbitrary unpickling is refused here, with a message."""
        super().parse_arguments(parser, args)
        config = self.config[self.config.subcommand] if self.config.get("subcommand") else self.config
        try:  # before LightningCLI puts a checkpoint's hyperparameters into the config: only what the user gave
            refuse_what_would_be_replaced(config)
        except ValueError as error:
            self.parser.error(str(error))
        self.checkpoint: dict[str, Any] | None = None
        path = config.get("ckpt_path") if self.config.get("subcommand") else None
        if path is not None and Path(path).is_file():
            self.checkpoint = self._read(path)
            if brought := what_the_file_brings(self.checkpoint, path, config.model):
                rank_zero_info(brought)

    def before_instantiate_classes(self) -> None:
        """Where the command logs and what checkpoint it reads (:mod:`lit_vae.run_location`),
        and every refusal that needs no object, before anything is built or written."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger = logger_args(config.trainer.logger)
        chosen = place_fresh(config, logger)
        try:
            check_steps(config)
            if config.ckpt_path == "last":
                config.ckpt_path = str(find_last(config, logger))
                self.checkpoint = self._read(config.ckpt_path)
            elif config.ckpt_path is not None and self.checkpoint is None:
                raise FileNotFoundError(f"--ckpt_path: no checkpoint file at {config.ckpt_path}. Give the path of a .ckpt file, "
                                        "or `last` for the newest checkpoint of this run.")
            if self.subcommand == "fit" and self.checkpoint is not None:  # read above: ckpt_path is given
                refuse_incomplete_for_resume(self.checkpoint, f"--ckpt_path: {config.ckpt_path}")
                place_resume(config, logger, self.checkpoint)
                # A resumed run's checkpoint folder is its own, and never empty: nothing to warn about.
                warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            elif config.ckpt_path is not None and logger is not None and not chosen:
                place_evaluation(config, logger, str(self.subcommand))
            elif self.subcommand == "fit":
                refuse_used_version(logger)
        except (FileNotFoundError, ValueError) as error:
            self.parser.error(str(error))

    def _read(self, path: str | Path) -> dict[str, Any]:
        try:
            refuse_link_out_of_run(path)
            return read_checkpoint(path)
        except ValueError as error:
            self.parser.error(f"--ckpt_path: {error}")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """LightningCLI's, with this CLI's progress bar, model summary and step checkpoints added
        unless the Trainer's flags say otherwise: no bar with ``enable_progress_bar false`` or
        where the user's callbacks bring one (``RichProgressBar``); no summary with
        ``enable_model_summary false`` or where the user's callbacks bring one; no checkpoints with
        ``enable_checkpointing false``, which is then said, since the run cannot be resumed."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer = config["trainer"]
        callbacks = list(trainer.get("callbacks") or [])
        if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(config["progress_bar"])
        if trainer.get("enable_model_summary") is not False and not any(isinstance(c, ModelSummary) for c in callbacks):
            callbacks.append(ParameterSummary())
        if trainer.get("enable_checkpointing") is not False:
            callbacks.append(config["checkpoint"])
        elif self.subcommand == "fit":
            rank_zero_info("--trainer.enable_checkpointing false: this run saves no checkpoint, so it cannot be resumed "
                           "(--ckpt_path last) or evaluated later (test --ckpt_path).")
        return super().instantiate_trainer(**{"callbacks": callbacks, **kwargs})

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as error:  # argument checks in the constructors: say which, no traceback
            self.parser.error(str(error))
        except MisconfigurationException as error:  # a Trainer setting Lightning refuses (an absent GPU)
            self.parser.error(trainer_error(error))
        strategy = self.trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:  # not one the user chose
            strategy.checkpoint_io = AtomicCheckpointIO()
        if self.checkpoint is not None and isinstance(strategy.checkpoint_io, AtomicCheckpointIO):
            strategy.checkpoint_io.preload(self.config[self.subcommand].ckpt_path, self.checkpoint)

    def before_fit(self) -> None:
        """Every refusal that needs the model, the data or the trainer (:func:`check_before_run`),
        before the trainer writes anything (logs, config, checkpoints); then a fit takes its folder."""
        try:
            check_before_run(str(self.subcommand), self.model, self.datamodule, self.trainer, self.checkpoint,
                             self.config[self.subcommand].ckpt_path)
        except ValueError as error:
            self.parser.error(str(error))
        if self.subcommand == "fit" and self.trainer.is_global_zero:
            self._take_run_folder()
            self._fit_started = time.perf_counter(), self.checkpoint.get("samples_evaluated", 0) if self.checkpoint else 0

    def _take_run_folder(self) -> None:
        """Every check passed: lock the run folder (a second fit is refused, naming this PID; the lock
        marks it as a fit's for ``last``); on a resume, :meth:`RunFolder.clear_for_resume`."""
        folder = RunFolder.of_trainer(self.trainer)
        if folder is None:
            if self.config.fit.checkpoint.dirpath is None:
                return
            folder = RunFolder(Path(self.config.fit.checkpoint.dirpath))
        try:
            folder.lock()
        except (BlockingIOError, LockUnavailableError) as error:
            self.parser.error(str(error))
        rank_zero_info(f"run folder: {folder.path.resolve()} (seed {self.config.fit.seed_everything})")
        if self.checkpoint is None:  # a fresh fit: nothing to clear
            return
        checkpoints, callback = Path(self.config.fit.ckpt_path).parent, self.trainer.checkpoint_callback
        if folder.path in (checkpoints, checkpoints.parent):  # a folder this process holds
            tracked = callback.tracked_files(self.checkpoint) if isinstance(callback, RunCheckpoint) else None
            folder.clear_for_resume(checkpoints, self.checkpoint["global_step"], tracked)

    before_validate = before_test = before_predict = before_fit

    def after_fit(self) -> None:
        """What the fit leaves, said at its end (:func:`lit_vae.console.fit_summary`)."""
        folder = RunFolder.of_trainer(self.trainer)  # a broadcast under DDP: every rank asks
        if self.trainer.is_global_zero:
            started, samples_at_start = getattr(self, "_fit_started", (time.perf_counter(), 0))
            seconds = time.perf_counter() - started
            rank_zero_info(fit_summary(self.trainer, self.model, folder.path if folder else None, seconds, samples_at_start))


def cli(args: list[str] | None = None) -> VAECLI:
    """Build and run the CLI on ``args`` (default: the command line); returns it, with its trainer."""
    silence_what_does_not_apply()
    # No abbreviations: --trainer.max_step would otherwise be taken as --trainer.max_steps.
    about = {"description": description(), "allow_abbrev": False}
    try:
        return VAECLI(
            GenerativeModel,
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=DEFAULT_SEED,
            save_config_callback=SaveConfigOnce,
            parser_class=OneLineErrors,
            parser_kwargs={**about, "prog": "lit-vae", **{command: about for command in ("fit", "validate", "test", "predict")}},
            args=None if args is None else shipped_configs(args),
        )
    finally:  # the fit has ended (or failed): its run folder is free for the next
        release_held()
