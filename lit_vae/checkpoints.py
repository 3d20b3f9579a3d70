"""Refusing checkpoints that cannot continue or evaluate a model, before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

#: Hyperparameters that fix the shapes of the networks.
ARCHITECTURE = ("input_dim", "latent_dim", "hidden_dim", "likelihood")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path``, or ``ValueError`` saying it is unreadable or not a checkpoint."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # whatever the reason, the file cannot be read as a checkpoint
        raise ValueError(f"{path} cannot be read as a checkpoint (truncated or damaged?): {error}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint: it has no state_dict")
    return checkpoint


def check_checkpoint(path: str | Path, model: pl.LightningModule) -> dict[str, Any]:
    """The checkpoint at ``path``; ``ValueError`` with a message that says what is wrong if it
    is unreadable (truncated, damaged, not a checkpoint), holds another model class, or was
    trained with another architecture (latent size, hidden units, ...) than ``model``."""
    checkpoint = read_checkpoint(path)
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
    return checkpoint
