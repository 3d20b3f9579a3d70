"""What the CLI refuses before anything is written, each as a ``ValueError`` whose message is the
one line the user sees: step counts that can only be mistakes, options that would be replaced
silently, and, once the objects exist, a checkpoint of another model, a model that cannot run
on this many processes, data that is missing or damaged, callback settings that do not fit the
model. Also the one line that says what a checkpoint given by path brings with it."""

from __future__ import annotations

import inspect
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, Trainer

from lit_vae.callbacks.checkpoint_files import architecture_differences, check_checkpoint
from lit_vae.callbacks.images import ImagesCallback, manifold_points
from lit_vae.callbacks.marginal_likelihood import MarginalLikelihoodCallback
from lit_vae.generative import GenerativeModel

#: The model's arguments that the CLI links from the data module, and what to give instead.
LINKED_FROM_DATA = {"input_dim": "it is the data set's number of pixels",
                    "train_size": "give --data.init_args.train_size instead"}


def check_steps(config: Namespace) -> None:
    """Step counts that can only be mistakes."""
    max_steps = config.trainer.max_steps
    if max_steps is not None and (max_steps == 0 or max_steps < -1):
        raise ValueError(f"--trainer.max_steps must be positive (or -1, no limit), got {max_steps}")
    every = config.checkpoint.every_n_train_steps
    if every is not None and every < 0:
        raise ValueError(f"--checkpoint.every_n_train_steps must be >= 0 (0: no step checkpoints), got {every}")


def refuse_what_would_be_replaced(config: Namespace) -> None:
    """Options that would be replaced silently, naming the one that decides: the model's sizes
    linked from the data, and another optimizer in place of the paper's (LightningCLI's
    ``--optimizer`` replaces ``configure_optimizers``) without ``--allow_other_optimizer``."""
    defaults = inspect.signature(GenerativeModel.__init__).parameters
    for key, instead in LINKED_FROM_DATA.items():
        if config.model.init_args.get(key, defaults[key].default) != defaults[key].default:
            raise ValueError(f"--model.init_args.{key} is set from the data, which would override it: {instead}")
    chosen = [f"--{key}" for key in ("optimizer", "lr_scheduler") if config.get(key) is not None]
    if chosen and not config.allow_other_optimizer:
        raise ValueError(f"{' and '.join(chosen)} would replace the paper's Adagrad and its accumulate-only warm-up "
                         "(configure_optimizers); add --allow_other_optimizer true to do that")


def what_the_file_brings(checkpoint: dict[str, Any], path: str, model: Namespace) -> str | None:
    """A checkpoint given by path brings its own model class and architecture, which replace the
    config's (LightningCLI's rule): the line that says so where they differ, else ``None``."""
    saved = checkpoint.get("hyper_parameters", {})
    differences = []
    saved_class, asked_class = saved.get("_class_path", ""), model.get("class_path", "")
    if saved_class and saved_class.rpartition(".")[2] != asked_class.rpartition(".")[2]:
        differences.append(f"a {saved_class.rpartition('.')[2]}, not a {asked_class.rpartition('.')[2]}")
    asked = model.get("init_args") or {}
    differences += [f"{key}={saved[key]}, not {asked[key]}" for key in architecture_differences(saved, asked)]
    if not differences:
        return None
    return (f"--ckpt_path {path}: the model is built as this checkpoint was trained ({'; '.join(differences)}): "
            "a checkpoint given by path brings its own class and architecture.")


def check_before_run(subcommand: str, model: GenerativeModel, data: LightningDataModule, trainer: Trainer,
                     checkpoint: dict[str, Any] | None, ckpt_path: str | None) -> None:
    """Refuse a checkpoint of another model, ``predict`` of a model without an encoder, a model
    that cannot run on the trainer's processes, missing or damaged data (prepared and set up
    here, before the logger writes), and callback settings that do not fit the model."""
    if checkpoint is not None:
        try:
            check_checkpoint(checkpoint, str(ckpt_path), model)
        except ValueError as error:
            raise ValueError(f"--ckpt_path: {error}") from None
    if subcommand == "predict" and not model.has_encoder:
        raise ValueError(f"predict writes each datapoint's q(z|x) and reconstruction, and {type(model).__name__} "
                         "has no encoder: evaluate it with `test` (its marginal likelihood) instead")
    model.check_world_size(trainer.world_size)
    try:
        data.prepare_data()
        data.setup(subcommand)
    except (OSError, ValueError) as error:
        raise ValueError(f"data: {error}") from None
    for callback in getattr(trainer, "callbacks", []):
        if isinstance(callback, MarginalLikelihoodCallback):
            try:
                callback.uses_hmc(model)
            except ValueError as error:
                raise ValueError(f"--marginal_likelihood.{error}") from None
        if isinstance(callback, ImagesCallback) and callback.manifold_dims is not None:
            try:
                manifold_points(callback.manifold_size, model.latent_dim, callback.manifold_dims)
            except ValueError as error:
                raise ValueError(f"--images.{error}") from None
