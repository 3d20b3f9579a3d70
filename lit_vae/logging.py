"""Logging against the paper's x axis: the number of training samples evaluated (Figure 2)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams


@rank_zero_only
def log_at_samples(trainer: pl.Trainer, metrics: dict[str, float], samples: int) -> None:
    """Write ``metrics`` to every logger of ``trainer`` with step = training samples evaluated.

    Goes straight to the loggers (not through ``self.log``), so the step is ours rather than
    the optimizer-step count, and nothing is done per training step.
    """
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=samples)


def log_evaluation(module: pl.LightningModule, metrics: dict[str, float], samples: int, prog_bar: bool = False) -> None:
    """Log an evaluation's ``metrics`` (lower bound, marginal likelihood) at step = ``samples``.

    Under ``test`` and ``validate`` through ``module.log`` with Lightning's own ``step`` entry,
    which sets the step its loggers write at: ``trainer.test()`` returns the numbers, Lightning
    prints its results table, and the loggers get the same numbers, once. During ``fit``
    straight to the loggers (:func:`log_at_samples`), and to the callback metrics without
    ``step``: there it would become the ``step=`` in ModelCheckpoint's file names.
    """
    trainer = module.trainer
    if trainer.sanity_checking:
        return
    if trainer.state.fn == TrainerFn.FITTING:
        log_at_samples(trainer, metrics, samples)
        for tag, value in metrics.items():
            module.log(tag, value, prog_bar=prog_bar, logger=False, rank_zero_only=True)
    else:
        for tag, value in metrics.items():
            module.log(tag, value, rank_zero_only=True)
        # float64: a float32 step would be rounded above 2^24 samples
        module.log("step", torch.tensor(samples, dtype=torch.float64), rank_zero_only=True)


#: The name ending of the event file that holds a fit's final, off-schedule test evaluation.
END_OF_FIT_SUFFIX = ".end_of_fit"


@rank_zero_only
def log_end_of_fit(trainer: pl.Trainer, metrics: dict[str, float], samples: int) -> None:
    """Log the final evaluation of a fit that ended off the logging schedule at step ``samples``.

    For a TensorBoard logger into an event file of its own in the run folder (ending in
    :data:`END_OF_FIT_SUFFIX`), which a resume from that end removes
    (:meth:`lit_vae.run_folder.RunFolder.clear_for_resume`): a resume's purge mark keeps the points at
    its checkpoint's step, so this point would otherwise stay on the curve, where the run that
    never stopped has none. Other loggers get it as any other point."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            with SummaryWriter(logger.log_dir, filename_suffix=END_OF_FIT_SUFFIX) as writer:
                for tag, value in metrics.items():
                    writer.add_scalar(tag, value, global_step=samples)
        else:
            logger.log_metrics(metrics, step=samples)


#: The loggers that take pictures during training (:func:`log_image_at_samples`).
IMAGE_LOGGERS = (TensorBoardLogger, MLFlowLogger, WandbLogger)


@rank_zero_only
def log_image_at_samples(trainer: pl.Trainer, tag: str, image: Tensor, samples: int) -> None:
    """Add ``image`` (``[3, H, W]``, values in [0, 1]) to every logger of ``trainer`` that takes
    pictures, with step = training samples evaluated: TensorBoard's Images tab, MLflow's stepped
    run images (``MlflowClient.log_image`` with a key and a step), W&B's media panel. Other
    loggers (CSV) have no picture call and are skipped."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, global_step=samples)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_image(logger.run_id, image.permute(1, 2, 0).cpu().numpy(), key=tag, step=samples)
        elif isinstance(logger, WandbLogger):
            logger.log_image(tag, [image.cpu()], step=samples)


@rank_zero_only
def log_histogram_at_samples(trainer: pl.Trainer, tag: str, values: Tensor, samples: int) -> None:
    """Add a histogram of ``values`` to every TensorBoard logger of ``trainer`` with step =
    training samples evaluated (the Histograms and Distributions tabs)."""
    if trainer.sanity_checking:
        return
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_histogram(tag, values, global_step=samples)


#: The metrics TensorBoard's HPARAMS tab lists beside each run's hyperparameters (their latest values).
HPARAMS_METRICS = ("lower_bound/train", "lower_bound/test", "iwae_bound/test", "marginal_likelihood/test",
                   "marginal_likelihood_importance/test")


#: TensorBoard's Custom Scalars tab: each quantity's splits overlaid in one chart.
LAYOUT = {
    "bound (nats per datapoint)": {
        "lower bound": ["Multiline", ["lower_bound/train", "lower_bound/test", "lower_bound/validation", "iwae_bound/test"]],
        "reconstruction, E_q[log p(x|z)]": ["Multiline", ["reconstruction/train", "reconstruction/test"]],
        "KL(q(z|x) || p(z))": ["Multiline", ["kl/train", "kl/test"]],
    },
    "marginal likelihood (nats per datapoint)": {
        "log p(x)": ["Multiline", [f"{name}/{split}" for name in ("marginal_likelihood", "marginal_likelihood_importance")
                                   for split in ("train", "test")]],
    },
}


@rank_zero_only
def log_hparams(trainer: pl.Trainer, params: dict[str, Any]) -> None:
    """List the run in TensorBoard's HPARAMS tab: ``params`` (values other than numbers, strings
    and booleans as text) beside the latest values of :data:`HPARAMS_METRICS`, which the tab reads
    from the curves. Only the tab's summaries are written: Lightning's own
    ``log_hyperparams(params, metrics)`` would also add a point at step 0 to each curve."""
    flat = {key: value if isinstance(value, (bool, int, float, str)) else str(value) for key, value in params.items()}
    summaries = hparams(flat, dict.fromkeys(HPARAMS_METRICS, 0.0))
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            writer = logger.experiment._get_file_writer()  # as SummaryWriter.add_hparams and Lightning write them
            for summary in summaries:
                writer.add_summary(summary)


#: Lightning's ``CSVLogger``'s file, and where a resume moves it until :func:`keep_csv_rows`.
CSV_METRICS, CSV_METRICS_BEFORE_RESUME = "metrics.csv", ".metrics.csv.before-resume"


@rank_zero_only
def keep_csv_rows(trainer: pl.Trainer, samples: int) -> None:
    """On a resume from a checkpoint at ``samples``: put back the rows of the run's ``metrics.csv``
    that :meth:`~lit_vae.run_folder.RunFolder.clear_for_resume` moved aside (Lightning's CSV
    writer deletes the file when it starts), up to that step: the resumed run logs what came
    after the checkpoint again."""
    for logger in trainer.loggers:
        if not isinstance(logger, CSVLogger):
            continue
        before = Path(logger.log_dir) / CSV_METRICS_BEFORE_RESUME
        if not before.is_file():
            continue
        with open(before, newline="") as file:
            reader = csv.DictReader(file)
            rows = [row for row in reader if row.get("step") and float(row["step"]) <= samples]
            header = list(reader.fieldnames or [])
        writer = logger.experiment
        writer.metrics_keys, writer.metrics = header, rows
        writer.save()
        before.unlink()


@rank_zero_only
def log_layout(trainer: pl.Trainer) -> None:
    """TensorBoard's Custom Scalars tab: :data:`LAYOUT`, each quantity's splits in one chart. The
    other loggers (CSV, MLflow, W&B, ...) get the same scalars and hyperparameters, and the
    pictures where they take them (:data:`IMAGE_LOGGERS`); for each one line says what only
    TensorBoard shows."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_custom_scalars(LAYOUT)
            continue
        takes_pictures = isinstance(logger, IMAGE_LOGGERS)
        logged = "the scalars, hyperparameters and pictures" if takes_pictures else "the scalars and hyperparameters"
        only = "the Custom Scalars layout, histograms and the projector" + ("" if takes_pictures else " and the pictures during training")
        rank_zero_info(f"{type(logger).__name__}: {logged} are logged there; {only} are TensorBoard's only (the pictures "
                       "are also saved as images/*.png in the run folder at the end of the fit)")
