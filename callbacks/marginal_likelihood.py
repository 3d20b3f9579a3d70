"""Marginal likelihood during training and on ``test``: the y axis of Figure 3."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from tqdm.auto import tqdm

from lit_vae.appendix_d import DEFAULT_SETTINGS, MarginalLikelihoodSettings
from lit_vae.callbacks.estimates import CheckedEstimate
from lit_vae.callbacks.schedule import DEFAULT_MANTISSAS, LogSpacedSchedule
from lit_vae.interfaces import SplitData, evaluating, model_of, recognition_of, require_model
from lit_vae.logging import log_evaluation
from lit_vae.marginal_likelihood import hmc_log_marginal, importance_log_marginal, prior_search
from lit_vae.seeding import seeded_generator


class MarginalLikelihoodCallback(pl.Callback):
    """Estimates log p(x) on the first ``settings.num_datapoints`` training and test points (the
    paper's protocol: 1,000 each) and logs, with step = training samples evaluated:

    - ``marginal_likelihood_importance/{train,test}``: importance sampling with q(z|x), for
      models that have one;
    - ``marginal_likelihood/{train,test}``: the HMC estimator of Appendix D, where the paper
      finds it reliable: by default (``hmc="auto"``) up to ``hmc_max_latent_dim`` latent
      dimensions, and always for a model without an encoder (``MCEM``), whose only estimate it
      is; its chains then start at the best of ``settings.prior_draws`` prior draws
      (:func:`~lit_vae.marginal_likelihood.prior_search`) instead of at the encoder's mean.

    An impossible estimate (:class:`~lit_vae.callbacks.estimates.CheckedEstimate`) is reported
    as failed, with its reason, and never logged as a number.

    During ``fit`` (when ``during_fit``) at the log-spaced schedule's points from ``start`` on
    (not at the end of a fit off the schedule: a run stopped and resumed logs the same points as
    one that never stopped; ``train.py test`` evaluates any checkpoint); during ``test`` always,
    on the test points, printing both
    estimates beside the lower bound of the same points. Under DDP each rank takes a shard of
    the points and the means are reduced with torchmetrics. It uses its own seeded generator,
    never the training noise, and differentiates with respect to z only: parameters and
    optimizer state are untouched.

    Args:
        during_fit: evaluate during training (costs seconds per point of the schedule).
        hmc: ``auto`` (as above), ``always`` or ``never`` run the HMC estimator.
        hmc_max_latent_dim: the largest latent size ``auto`` runs it at (the paper: below 5).
        settings: the protocol of Appendix D (samples, leapfrog steps, burn-in, points, ...).
        mantissas: schedule points are ``m x 10^k``.
        start: first sample count of the schedule to evaluate at.
        chunk_size: datapoints processed at once (bounds memory).
        seed: seed of the estimators' noise.
    """

    def __init__(
        self,
        during_fit: bool = False,
        hmc: Literal["auto", "always", "never"] = "auto",
        hmc_max_latent_dim: int = 4,
        settings: MarginalLikelihoodSettings = DEFAULT_SETTINGS,
        mantissas: Sequence[float] = DEFAULT_MANTISSAS,
        start: int = 100_000,
        chunk_size: int = 250,
        seed: int = 0,
    ) -> None:
        if hmc not in ("auto", "always", "never"):
            raise ValueError(f"hmc must be auto, always or never, got {hmc!r}")
        self.during_fit = during_fit
        self.hmc = hmc
        self.hmc_max_latent_dim = hmc_max_latent_dim
        self.settings = settings
        self.schedule = LogSpacedSchedule(mantissas)
        self.start = start
        self.chunk_size = chunk_size
        self.seed = seed
        #: The latest estimates that hold, ``{"marginal_likelihood/test": ..., "lower_bound/test": ..., ...}``.
        self.results: dict[str, float] = {}
        #: The standard errors of :attr:`results` over the points.
        self.errors: dict[str, float] = {}
        #: The latest failed estimates, ``{"marginal_likelihood/test": reason, ...}``.
        self.failures: dict[str, str] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require_model(pl_module, type(self).__name__)
        self.uses_hmc(pl_module)  # raises before training (the CLI asks earlier, to refuse in one line)

    def uses_hmc(self, pl_module: pl.LightningModule) -> bool:
        """Whether the HMC estimator runs for this model (see ``hmc``); ``ValueError`` where it
        would estimate nothing (``never`` for a model without an encoder)."""
        model = model_of(pl_module)
        if not model.has_encoder:
            if self.hmc == "never":
                raise ValueError(f"hmc never: {type(pl_module).__name__} has no encoder, so the HMC estimator is its only "
                                 "estimate of log p(x); use auto or always")
            return True
        if self.hmc == "auto":
            return model.latent_dim <= self.hmc_max_latent_dim
        return self.hmc == "always"

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        model = model_of(pl_module)
        after, before = model.samples_evaluated, model.samples_before_step
        if self.during_fit and after >= self.start and self.schedule.due(max(before, self.start - 1), after):
            self.evaluate(trainer, pl_module, ("train", "test"))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.evaluate(trainer, pl_module, ("test",))

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, splits: Sequence[str]) -> dict[str, float]:
        """The estimates (and the lower bound) on the first points of each split; logs and
        returns those that hold, and prints them with the reason of any that failed."""
        datamodule = getattr(trainer, "datamodule", None)
        if not isinstance(datamodule, SplitData):
            raise TypeError("MarginalLikelihoodCallback reads the first points of each split from a data module "
                            "with splits (one of lit_vae.datamodules)")
        datamodule.setup()
        self.results, self.errors, self.failures, started = {}, {}, {}, time.perf_counter()
        with evaluating(pl_module), torch.inference_mode(False):
            for split in splits:
                checked = self._estimate(trainer, pl_module, datamodule.splits[split][: self.settings.num_datapoints], split)
                for name, estimate in checked.items():
                    failure = estimate.failure() if name != "lower_bound" else None
                    if failure is None:
                        self.results[f"{name}/{split}"] = estimate.compute()
                        self.errors[f"{name}/{split}"] = estimate.standard_error()
                    else:
                        self.failures[f"{name}/{split}"] = failure
        estimates = {k: v for k, v in self.results.items() if not k.startswith("lower_bound")}
        log_evaluation(pl_module, {**estimates, **{k.replace("/", "_standard_error/"): self.errors[k] for k in estimates}},
                       model_of(pl_module).samples_evaluated)
        for split in splits:
            points = min(self.settings.num_datapoints, len(datamodule.splits[split]))
            rank_zero_info(f"log p(x) of the first {points:,} {split} points ({data_variant(datamodule)}) at "
                           f"{model_of(pl_module).samples_evaluated:,} samples ({time.perf_counter() - started:.0f} s): "
                           + "; ".join(self._report(pl_module, split)))
        return self.results

    def _report(self, pl_module: pl.LightningModule, split: str) -> list[str]:
        """Lower bound, importance estimate, HMC estimate, each with its method and samples."""
        settings = self.settings
        methods = [("lower_bound", "lower bound"),
                   ("marginal_likelihood_importance", f"importance sampling ({settings.importance_samples:,} samples)"),
                   ("marginal_likelihood", f"HMC, Appendix D ({settings.num_samples} samples)")]
        lines = []
        for name, method in methods:
            key = f"{name}/{split}"
            if key in self.results:
                lines.append(f"{method} {self.results[key]:.2f} +- {self.errors[key]:.2f} nats per datapoint")
            elif key in self.failures:
                lines.append(f"{method} FAILED, not reported: {self.failures[key]}")
            elif name == "marginal_likelihood":
                lines.append(f"HMC not applicable: latent_dim {model_of(pl_module).latent_dim} > {self.hmc_max_latent_dim}, where "
                             "the paper finds it unreliable (--marginal_likelihood.hmc always runs it)"
                             if self.hmc == "auto" else "HMC not run (--marginal_likelihood.hmc never)")
        return lines

    def _estimate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, data: torch.Tensor,
                  split: str) -> dict[str, CheckedEstimate]:
        model = model_of(pl_module)
        shard = data[trainer.global_rank :: trainer.world_size].to(pl_module.device)
        generator = seeded_generator(self.seed, model.samples_evaluated, trainer.global_rank, int(split == "test"),
                                     generator=torch.Generator(device=pl_module.device))
        encoder, hmc = model.has_encoder, self.uses_hmc(pl_module)
        names = (("marginal_likelihood",) if hmc else ()) + (("marginal_likelihood_importance", "lower_bound") if encoder else ())
        checked = {name: CheckedEstimate(model.max_log_likelihood).to(pl_module.device) for name in names}
        chunks = shard.split(self.chunk_size)
        show = trainer.is_global_zero and trainer.progress_bar_callback is not None
        steps = (self.settings.burn_in + self.settings.num_samples if hmc else 0) + (1 if encoder else 0)
        progress = Progress(len(chunks) * steps, f"log p(x), {split}", show)
        for x in chunks:
            estimates = {}
            if hmc:
                init = (recognition_of(pl_module).encode(x)[0].detach() if encoder else
                        prior_search(model.log_joint, model.prior_sample, x, self.settings.prior_draws,
                                     generator=generator))
                estimates["marginal_likelihood"] = hmc_log_marginal(
                    model.log_joint, x, model.latent_dim, settings=self.settings, init=init, generator=generator,
                    on_iteration=progress.tick)
            if encoder:
                estimates["marginal_likelihood_importance"] = importance_log_marginal(
                    recognition_of(pl_module), x, self.settings.importance_samples, generator=generator)
                progress.tick()
                with torch.no_grad():
                    estimates["lower_bound"] = recognition_of(pl_module).lower_bound(x, generator=generator)
            for name, estimate in estimates.items():
                checked[name].update(estimate.detach(), estimates.get("lower_bound") if name != "lower_bound" else None)
        progress.close()
        return checked


def data_variant(datamodule: object) -> str:
    """The data the estimate is of, as a reader comparing numbers needs it: the data module and
    its binarisation (``grey levels`` where none)."""
    binarize = getattr(datamodule, "binarize", None)
    variant = "" if binarize is None else "grey levels" if binarize == "none" else f"binarised {binarize}"
    return ", ".join(filter(None, [type(datamodule).__name__.removesuffix("DataModule"), variant]))


class Progress:
    """The evaluation's progress, one tick per HMC iteration and per importance-sampling pass of
    every chunk: a bar on a terminal; elsewhere (a log file, a pipe) a plain line at each tenth,
    with no cursor codes."""

    def __init__(self, total: int, description: str, show: bool) -> None:
        self.total, self.description, self.done, self.tenths = total, description, 0, 0
        self.started = time.perf_counter()
        self.bar = tqdm(total=total, desc=description, leave=False) if show and sys.stderr.isatty() else None
        self.plain = show and self.bar is None

    def tick(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update()
        elif self.plain and self.done * 10 >= (self.tenths + 1) * self.total:
            self.tenths = self.done * 10 // self.total
            print(f"{self.description}: {self.done / self.total:.0%} of {self.total:,} steps "
                  f"({time.perf_counter() - self.started:.0f} s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
