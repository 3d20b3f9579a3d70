"""``python train.py``, ``python -m lit_vae`` and ``lit-vae``: LightningCLI with the paper's
defaults. The composition root: the one module that puts models, data, callbacks and the run
folder policy (``lit_vae.runs``) together.

Runs go to ``runs/<data>_nz<latent_dim>/version_<n>/`` (TensorBoard events, ``config.yaml``,
``checkpoints/``). ``fit --ckpt_path last`` resumes the newest version of the run and keeps
logging into its folder, so the curves continue where they stopped; ``test``, ``validate`` and
``predict`` of a run's checkpoint log into its ``test/``, ``validate/`` or ``predict/``
sub-folder. ``--config NAME`` takes a
config shipped with the package (``mnist``, ``frey_face``, ``figure3_n1000``, ...) when no file
of that name exists.
"""

from __future__ import annotations

import inspect
import time
import warnings
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelSummary, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.core import LightningModule
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import MisconfigurationException

# baselines imported so that `--model WakeSleep` / `--model MCEM` resolve by class name, as VAE does.
from lit_vae import baselines, runs  # noqa: F401
from lit_vae.callbacks.checkpoint import EVERY_N_TRAIN_STEPS, RunCheckpoint, RunState
from lit_vae.callbacks.checkpoint_files import (
    AtomicCheckpointIO,
    architecture_differences,
    check_checkpoint,
    read_checkpoint,
    refuse_incomplete_for_resume,
)
from lit_vae.callbacks.images import ImagesCallback, manifold_points
from lit_vae.callbacks.lower_bound import LowerBoundCallback
from lit_vae.callbacks.marginal_likelihood import MarginalLikelihoodCallback
from lit_vae.callbacks.predictions import PredictionWriter
from lit_vae.callbacks.progress import SamplesProgressBar
from lit_vae.callbacks.summary import ParameterSummary
from lit_vae.console import OneLineErrors, description, shipped_configs, silence_what_does_not_apply, trainer_error
from lit_vae.generative import GenerativeModel

#: 10^7 training samples at M = 100: the right end of Figure 2.
DEFAULT_MAX_STEPS = 100_000

#: The seed of a run that names none (``--seed_everything``): always a number, which the run's
#: ``config.yaml`` records, where Lightning's own default would warn "No seed found" and use 0.
DEFAULT_SEED = 0

#: The model's arguments that the CLI links from the data module, and what to give instead.
LINKED_FROM_DATA = {"input_dim": "it is the data set's number of pixels",
                    "train_size": "give --data.init_args.train_size instead"}

#: Where runs go (``<save_dir>/<run name>/version_<n>``) unless ``--trainer.default_root_dir`` or
#: the logger's ``save_dir`` says otherwise.
DEFAULT_SAVE_DIR = "runs"

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
        # Before LightningCLI puts a checkpoint's hyperparameters into the config: only what
        # the user gave is judged.
        self._refuse_what_would_be_replaced(self.config[self.config.subcommand] if self.config.get("subcommand") else self.config)
        self.checkpoint: dict[str, Any] | None = None
        path = self.config[self.config.subcommand].get("ckpt_path") if self.config.get("subcommand") else None
        if path is not None and Path(path).is_file():
            self.checkpoint = self._read(path)
            self._say_what_the_file_brings(path, self.config[self.config.subcommand].model)

    def _say_what_the_file_brings(self, path: str, model: Namespace) -> None:
        """A checkpoint given by path brings its own model class and architecture, which replace
        the config's (LightningCLI's rule, applied next): say so where they differ, in one line."""
        saved = self.checkpoint.get("hyper_parameters", {})
        differences = []
        saved_class, asked_class = saved.get("_class_path", ""), model.get("class_path", "")
        if saved_class and saved_class.rpartition(".")[2] != asked_class.rpartition(".")[2]:
            differences.append(f"a {saved_class.rpartition('.')[2]}, not a {asked_class.rpartition('.')[2]}")
        asked = model.get("init_args") or {}
        differences += [f"{key}={saved[key]}, not {asked[key]}" for key in architecture_differences(saved, asked)]
        if differences:
            rank_zero_info(f"--ckpt_path {path}: the model is built as this checkpoint was trained ({'; '.join(differences)}): "
                           "a checkpoint given by path brings its own class and architecture.")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger = logger_args(config.trainer.logger)
        where_chosen = logger is not None and (logger.get("save_dir") != DEFAULT_SAVE_DIR or logger.get("version") is not None
                                               or config.trainer.default_root_dir is not None)
        # As in any Lightning project: --trainer.default_root_dir decides where runs go, unless
        # the logger's save_dir is given otherwise.
        if logger is not None and config.trainer.default_root_dir is not None and logger.get("save_dir") == DEFAULT_SAVE_DIR:
            logger.save_dir = config.trainer.default_root_dir
        if logger is not None and logger.get("name", "") is None:
            logger.name = runs.run_name(config.data.class_path, config.model.class_path, config.model.init_args.latent_dim)
        # ModelCheckpoint saves its folder in each checkpoint and, on resume, forgets which file
        # is last.ckpt unless the folder is spelled the same: absolute paths, whatever the cwd.
        if logger is not None and logger.get("save_dir"):
            logger.save_dir = str(Path(logger.save_dir).resolve())
        if config.checkpoint.dirpath is not None:
            config.checkpoint.dirpath = str(Path(config.checkpoint.dirpath).resolve())
        self._check_steps(config)
        if config.ckpt_path is not None:
            self._find_checkpoint(config, logger)
        if self.subcommand == "fit" and config.ckpt_path is not None:
            try:
                refuse_incomplete_for_resume(self.checkpoint, config.ckpt_path)
            except ValueError as error:
                self.parser.error(f"--ckpt_path: {error}")
            self._resume(config, logger)
        elif config.ckpt_path is not None and logger is not None and not where_chosen:
            self._evaluate_in_its_run(config, logger)
        elif self.subcommand == "fit" and logger is not None and logger.get("version") is not None:
            try:
                runs.refuse_used_version(runs.version_folder(logger.save_dir, logger.name, logger.version))
            except ValueError as error:
                self.parser.error(str(error))

    def _check_steps(self, config: Namespace) -> None:
        """Step counts that can only be mistakes, refused in one line before anything exists."""
        max_steps = config.trainer.max_steps
        if max_steps is not None and (max_steps == 0 or max_steps < -1):
            self.parser.error(f"--trainer.max_steps must be positive (or -1, no limit), got {max_steps}")
        every = config.checkpoint.every_n_train_steps
        if every is not None and every < 0:
            self.parser.error(f"--checkpoint.every_n_train_steps must be >= 0 (0: no step checkpoints), got {every}")

    def _refuse_what_would_be_replaced(self, config: Namespace) -> None:
        """Options that would be replaced silently, refused in one line naming the one that
        decides: the model's sizes linked from the data, and another optimizer in place of the
        paper's (LightningCLI's ``--optimizer`` replaces ``configure_optimizers``) without
        ``--allow_other_optimizer``."""
        defaults = inspect.signature(GenerativeModel.__init__).parameters
        for key, instead in LINKED_FROM_DATA.items():
            if config.model.init_args.get(key, defaults[key].default) != defaults[key].default:
                self.parser.error(f"--model.init_args.{key} is set from the data, which would override it: {instead}")
        chosen = [f"--{key}" for key in ("optimizer", "lr_scheduler") if config.get(key) is not None]
        if chosen and not config.allow_other_optimizer:
            self.parser.error(f"{' and '.join(chosen)} would replace the paper's Adagrad and its accumulate-only warm-up "
                              "(configure_optimizers); add --allow_other_optimizer true to do that")

    def _find_checkpoint(self, config: Namespace, logger: Namespace | None) -> None:
        """Resolve ``--ckpt_path last`` (for every subcommand) to the newest state of the newest
        run (:func:`runs.resume_checkpoint`) and read it; refuse a path that names no file, rather
        than run on an untrained model."""
        if config.ckpt_path == "last":
            try:
                path = self._find_last(config, logger)
            except FileNotFoundError as error:
                self.parser.error(str(error))
            config.ckpt_path = str(path)
            self.checkpoint = self._read(path)
        elif self.checkpoint is None:
            self.parser.error(f"--ckpt_path: no checkpoint file at {config.ckpt_path}. Give the path of a .ckpt file, "
                              "or `last` for the newest checkpoint of this run.")

    def _resume(self, config: Namespace, logger: Namespace | None) -> None:
        """Log into the run folder of the checkpoint a fit resumes from, and start the new event
        file with a purge mark at the checkpoint."""
        if logger is None:
            return
        run = runs.run_of_checkpoint(config.ckpt_path)
        if run is not None and config.checkpoint.dirpath is None:
            logger.save_dir, logger.name, logger.version = str(run[0]), run[1], run[2]
        if "purge_step" in logger:  # TensorBoardLogger's (its SummaryWriter's) argument
            logger.purge_step = runs.purge_step(self.checkpoint)
        # A resumed run's checkpoint folder is its own, and never empty: nothing to warn about.
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")

    def _evaluate_in_its_run(self, config: Namespace, logger: Namespace) -> None:
        """``test``, ``validate`` and ``predict`` of a checkpoint log into the folder of the run it
        belongs to (unless the logger's ``save_dir`` or ``version``, or ``default_root_dir``, say
        otherwise), in a sub-folder named by the subcommand (TensorBoard shows it beside the
        run's training curves, at the checkpoint's samples evaluated), rather than into a new
        ``version_<n>``; the training event files and the run's own ``hparams.yaml`` and
        ``config.yaml`` are left as they are."""
        run = runs.run_of_checkpoint(config.ckpt_path)
        if run is not None:
            logger.save_dir, logger.name, logger.version = str(runs.version_folder(*run)), self.subcommand, ""

    @staticmethod
    def _find_last(config: Namespace, logger: Namespace | None) -> Path:
        if config.checkpoint.dirpath is not None:
            try:
                return runs.newest_state(Path(config.checkpoint.dirpath))
            except FileNotFoundError as error:
                raise FileNotFoundError(f"--ckpt_path last: {error}. Nothing to resume: start a fresh run without --ckpt_path.") from None
        if logger is None:
            raise FileNotFoundError("--ckpt_path last needs a logger or --checkpoint.dirpath to know where the run is")
        return runs.resume_checkpoint(Path(logger.get("save_dir", ".")) / (logger.get("name") or ""))

    def _read(self, path: str | Path) -> dict[str, Any]:
        try:
            runs.refuse_link_out_of_run(path)
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
        """Refuse a checkpoint of another model, a model that cannot run on this many processes,
        or picture settings that do not fit the model, before the trainer writes anything (logs,
        config, checkpoints)."""
        if self.checkpoint is not None:
            try:
                check_checkpoint(self.checkpoint, self.config[self.subcommand].ckpt_path, self.model)
            except ValueError as error:
                self.parser.error(f"--ckpt_path: {error}")
        if self.subcommand == "predict" and not self.model.has_encoder:
            self.parser.error(f"predict writes each datapoint's q(z|x) and reconstruction, and {type(self.model).__name__} "
                              "has no encoder: evaluate it with `test` (its marginal likelihood) instead")
        try:
            self.model.check_world_size(self.trainer.world_size)
        except ValueError as error:
            self.parser.error(str(error))
        try:  # the data, before the logger or anything else writes: a missing or damaged file in one line
            self.datamodule.prepare_data()
            self.datamodule.setup(self.subcommand)
        except (OSError, ValueError) as error:
            self.parser.error(f"data: {error}")
        for callback in self.trainer.callbacks:
            if isinstance(callback, MarginalLikelihoodCallback):
                try:
                    callback.uses_hmc(self.model)
                except ValueError as error:
                    self.parser.error(f"--marginal_likelihood.{error}")
            if isinstance(callback, ImagesCallback) and callback.manifold_dims is not None:
                try:
                    manifold_points(callback.manifold_size, self.model.latent_dim, callback.manifold_dims)
                except ValueError as error:
                    self.parser.error(f"--images.{error}")
        if self.subcommand == "fit" and self.trainer.is_global_zero:
            self._take_run_folder()
            self._fit_started = time.perf_counter(), self.checkpoint.get("samples_evaluated", 0) if self.checkpoint else 0

    def _take_run_folder(self) -> None:
        """Every check passed: from here on this process writes into its run folder. Lock it (a
        second fit of the same folder is refused, naming this one's PID; the lock file also marks
        the folder as a fit's for ``--ckpt_path last``), and on a resume remove what saves killed
        midway left in the checkpoint folder and the previous fit's end-of-fit point."""
        folder = self.trainer.log_dir if self.trainer.loggers else self.config.fit.checkpoint.dirpath
        if folder is None:
            return
        try:
            runs.lock_folder(Path(folder))
        except (BlockingIOError, runs.LockUnavailableError) as error:
            self.parser.error(str(error))
        rank_zero_info(f"run folder: {Path(folder).resolve()} (seed {self.config.fit.seed_everything})")
        checkpoints = Path(self.config.fit.ckpt_path).parent if self.checkpoint is not None else None
        if checkpoints is not None and Path(folder) in (checkpoints, checkpoints.parent):  # a folder this process holds
            AtomicCheckpointIO.remove_leftovers(checkpoints)
            runs.remove_end_of_fit_events(Path(folder))
            if isinstance(self.trainer.checkpoint_callback, RunCheckpoint):
                self.trainer.checkpoint_callback.remove_orphans(checkpoints, self.checkpoint)

    before_validate = before_test = before_predict = before_fit

    def after_fit(self) -> None:
        """What the fit leaves, said at its end: the run folder, the last checkpoint, samples
        evaluated, the final bounds and samples per second over the whole fit."""
        trainer, model = self.trainer, self.model
        folder = trainer.log_dir if trainer.loggers else None  # a broadcast under DDP: every rank asks
        if not trainer.is_global_zero:
            return
        started, samples_at_start = getattr(self, "_fit_started", (time.perf_counter(), 0))
        lines = [f"run folder:        {Path(folder).resolve()}"] if folder else []
        last = getattr(trainer.checkpoint_callback, "last_model_path", "")
        lines.append(f"last checkpoint:   {last or 'none (checkpointing is off)'}")
        rate = (model.samples_evaluated - samples_at_start) / max(time.perf_counter() - started, 1e-9)
        lines.append(f"samples evaluated: {model.samples_evaluated:,} ({rate:,.0f} samples/s over this fit, evaluations included)")
        final = {tag: trainer.callback_metrics[tag].item() for tag in ("lower_bound/train", "lower_bound/test")
                 if tag in trainer.callback_metrics}
        for callback in trainer.callbacks:  # its latest test evaluation: also the one at an off-schedule end
            if isinstance(callback, LowerBoundCallback) and callback.latest is not None:
                final["lower_bound/test"] = callback.latest.lower_bound
        for tag in ("lower_bound/train", "lower_bound/test"):
            if tag in final:
                lines.append(f"{tag + ':':18} {final[tag]:.2f} nats per datapoint")
        rank_zero_info("\n".join(lines))


def logger_args(logger: object) -> Namespace | None:
    """The ``init_args`` of a logger configured by class path (as the default TensorBoard one
    is); ``None`` for no logger or one given otherwise."""
    return logger.init_args if isinstance(logger, Namespace) and "init_args" in logger else None


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
        runs.release_folders()
