"""The command line as a person meets it: errors in one line that name what was meant, shipped
configs by name, ``--help``'s description, Lightning's messages that do not apply here
silenced, and the summary at the end of a fit."""

from __future__ import annotations

import difflib
import inspect
import logging
import re
import sys
import warnings
from pathlib import Path
from typing import NoReturn

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser

from lit_vae.callbacks.lower_bound import LowerBoundCallback
from lit_vae.configs import config_file, config_names
from lit_vae.interfaces import model_of


class OneLineErrors(LightningArgumentParser):
    """LightningCLI's parser, whose errors are one line: what was wrong, and for an unknown
    option the closest valid ones, without the usage block of some 200 options before it."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse parsing a nested value: it catches this and goes on
            super().error(message, ex)
        sys.stderr.write(f"error: {short_error(message, self)}\n")
        sys.exit(2)


def short_error(message: str, parser: LightningArgumentParser) -> str:
    """The line of a parser's ``message`` that names the problem, with the closest valid names
    where it is an option that does not exist."""
    if unknown := re.search(r"unrecognized arguments: (--[\w.]+)", message, re.IGNORECASE):
        option = unknown.group(1)
        valid = [name for action in parser._actions for name in action.option_strings if name.startswith("--")]
        return f"no option {option}{_closest(option, valid, '')}"
    if unknown := re.search(r"class_path '([\w.]+)':\s+Option '(\w+)' is not accepted", message):
        class_path, name = unknown.groups()
        module, _, cls = class_path.rpartition(".")
        klass = getattr(sys.modules.get(module), cls, None)  # imported by the parser already: nothing new is imported
        if isinstance(klass, type):
            options = {parameter for base in klass.__mro__ if "__init__" in vars(base)
                       for parameter in inspect.signature(vars(base)["__init__"]).parameters} - {"self", "args", "kwargs"}
            return f"{cls} has no option {name}{_closest(name, sorted(options), '--model.init_args.')}"
    if unknown := re.search(r"Expected a dot import path string: ([\w.]+)", message):
        keys = re.findall(r'Parser key "([\w.]+)"', message)
        if keys and keys[0] in CLASS_CHOICES:
            return f"--{keys[0]} {unknown.group(1)}: no such class{_closest(unknown.group(1), CLASS_CHOICES[keys[0]], '')}; " \
                   f"choose from {', '.join(CLASS_CHOICES[keys[0]])}"
    return _reason(message)


#: The classes --model and --data take by name.
CLASS_CHOICES = {"model": ["VAE", "WakeSleep", "MCEM"], "data": ["MNISTDataModule", "FreyFaceDataModule", "ArrayDataModule"]}

#: jsonargparse's frames around the reason of a failed value: none of them says what was wrong.
_FRAMES = re.compile(r"Parser key|Does not validate|Subtypes:|Errors:|Problem with given class_path|Given value|"
                     r"Expected a <class 'NoneType'>")


def _reason(message: str) -> str:
    """The reason in a jsonargparse message, after the option it concerns (from its nested
    ``Parser key`` lines), e.g. ``--model.init_args.estimator: Expected a typing.Literal['A', 'B']``."""
    lines = [re.sub(r"^\s*- ", "", re.sub(r'^\s*Parser key "[\w.]+":\s*', "", line)).strip() for line in message.splitlines()]
    reasons = [line for line in lines if line and not _FRAMES.search(line)]
    keys = re.findall(r'Parser key "([\w.]+)"', message)
    option = f"--{keys[0]}.init_args.{'.'.join(keys[1:])}: " if len(keys) > 1 else f"--{keys[0]}: " if keys else ""
    return option + "; ".join(reasons) if reasons else message.strip().splitlines()[0]


def _closest(name: str, valid: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(name, valid, n=3)
    return f" (did you mean {', '.join(prefix + c for c in close)}?)" if close else " (--help lists the options)"


CONFIG_FLAGS = ("--config", "-c")


def trainer_error(error: Exception) -> str:
    """One line for a Trainer setting Lightning refuses; for an accelerator this machine lacks,
    what to do instead."""
    message = " ".join(str(error).split()).rstrip("!.")
    if re.search(r"gpu|cuda|mps|accelerator", message, re.IGNORECASE) and not torch.cuda.is_available():
        message += (". This machine has no GPU that torch can use; the CPU is the default, as in the paper: "
                    "leave out --trainer.accelerator and --trainer.devices")
    return f"--trainer: {message}"


def shipped_configs(args: list[str]) -> list[str]:
    """``args`` with each ``--config NAME`` (``-c NAME``, ``--config=NAME``) that names no file
    but a config shipped with the package (``mnist`` or ``mnist.yaml``) given that config's path."""
    resolved = []
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if eq and flag in CONFIG_FLAGS:
            arg = f"{flag}={shipped_config(value)}"
        elif i > 0 and args[i - 1] in CONFIG_FLAGS:
            arg = shipped_config(arg)
        resolved.append(arg)
    return resolved


def shipped_config(name: str) -> str:
    """``name`` itself if a file of that name exists, else the path of the package's config
    ``name`` (``.yaml`` may be left out); a name that is neither ends the command in one line
    naming the shipped configs."""
    if Path(name).exists():
        return name
    try:
        return str(config_file(name))
    except ValueError as error:
        sys.stderr.write(f"error: --config: {error}\n")
        sys.exit(2)


class _Irrelevant(logging.Filter):
    """Drops Lightning's advertising tips (the "litlogger" one on every run); its note that it
    leaves out its default model summary, which this CLI replaces by its own on purpose; its
    lines saying that no GPU or TPU is there (where one is, they stay); and "Seed set to", which
    came before every command, even one ending in a one-line error (a fit names its seed with
    its run folder)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith((
            "\N{ELECTRIC LIGHT BULB} Tip:", "Trainer already configured with model summary",
            "GPU available: False, used: False", "TPU available: False", "Seed set to"))


def silence_what_does_not_apply() -> None:
    """Lightning's messages that say nothing about this project's runs: its tips and the lines
    of :class:`_Irrelevant`; the warning
    that an epoch (Frey Face's 16 minibatches) is shorter than ``log_every_n_steps``, which only
    concerns per-step ``self.log`` calls (the models here log against samples evaluated, at epoch
    ends and schedule points); that a data set without a validation split (Frey Face) skips
    validation; that the prediction loop cannot track batch indices (the prediction writer
    reads each datapoint's row from its batch); that under manual optimization (MCEM) a
    checkpoint holds the state after the step's updates (the state a resume continues from, as
    wanted); and a deprecation inside Lightning's own code that no user can act on."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed"):
        logging.getLogger(name).addFilter(_Irrelevant())
    for message in (r"The number of training batches \(\d+\) is smaller than the logging interval",
                    r"You defined a `validation_step` but have no `val_dataloader`",
                    r"Couldn't infer the batch indices fetched from your dataloader",
                    r"Using ModelCheckpoint with manual optimization",
                    r"`isinstance\(treespec, LeafSpec\)` is deprecated"):
        warnings.filterwarnings("ignore", message=message)


def description() -> str:
    """What ``--help`` says of the tool: what it runs, the shipped configs, the models."""
    return (
        "lit-vae: Kingma & Welling, Auto-Encoding Variational Bayes (arXiv 1312.6114), on PyTorch Lightning. "
        f"Train with `fit --config NAME` (shipped configs: {', '.join(config_names())}), resume with "
        "`--ckpt_path last`, evaluate with `test --ckpt_path last`. Models (--model): VAE (AEVB, the default), "
        "WakeSleep, MCEM (lit_vae.baselines); `fit --model.help VAE` lists a model's options. "
        "`lit-vae reproduce --help`: the paper's figures in one command."
    )


def fit_summary(trainer: Trainer, model: LightningModule, folder: Path | None, seconds: float, samples_at_start: int) -> str:
    """What a fit leaves, said at its end: the run folder, the last checkpoint, samples evaluated
    and per second over this fit (``seconds`` long, from ``samples_at_start``), the final bounds
    (the test bound of the latest evaluation, also one at an off-schedule end)."""
    lines = [f"run folder:        {folder.resolve()}"] if folder else []
    last = getattr(trainer.checkpoint_callback, "last_model_path", "")
    lines.append(f"last checkpoint:   {last or 'none (checkpointing is off)'}")
    samples = model_of(model).samples_evaluated
    rate = (samples - samples_at_start) / max(seconds, 1e-9)
    lines.append(f"samples evaluated: {samples:,} ({rate:,.0f} samples/s over this fit, evaluations included)")
    final = {tag: trainer.callback_metrics[tag].item() for tag in ("lower_bound/train", "lower_bound/test")
             if tag in trainer.callback_metrics}
    for callback in getattr(trainer, "callbacks", []):
        if isinstance(callback, LowerBoundCallback) and callback.latest is not None:
            final["lower_bound/test"] = callback.latest.lower_bound
    lines += [f"{tag + ':':18} {final[tag]:.2f} nats per datapoint" for tag in ("lower_bound/train", "lower_bound/test") if tag in final]
    return "\n".join(lines)
