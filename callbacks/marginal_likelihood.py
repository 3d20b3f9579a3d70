"""Marginal likelihood during training and on ``test``: the y axis of Figure 3."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MeanMetric
from tqdm.auto import tqdm

from lit_vae.appendix_d import APPENDIX_D, AppendixD
from lit_vae.callbacks.schedule import DEFAULT_MANTISSAS, LogSpacedSchedule
from lit_vae.interfaces import SplitData, evaluating, require_model
from lit_vae.logging import log_evaluation
from lit_vae.marginal_likelihood import hmc_log_marginal, importance_log_marginal, prior_search
from lit_vae.seeding import seeded_generator


class MarginalLikelihoodCallback(pl.Callback):
    """Estimates log p(x) on the first ``settings.num_datapoints`` training and test points (the
    paper's protocol: 1,000 each) and logs, with step = training samples evaluated:

    - ``marginal_likelihood/{train,test}``: the HMC estimator of Appendix D,
    - ``marginal_likelihood_importance/{train,test}``: importance sampling with q(z|x), for
      models that have one. Without one (``MCEM``) the HMC chains start at the best of
      ``settings.prior_draws`` prior draws (:func:`~lit_vae.marginal_likelihood.prior_search`)
      instead of at the encoder's mean.

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
        settings: the protocol of Appendix D (samples, leapfrog steps, burn-in, points, ...).
        mantissas: schedule points are ``m x 10^k``.
        start: first sample count of the schedule to evaluate at.
        chunk_size: datapoints processed at once (bounds memory).
        seed: seed of the estimators' noise.
    """

    def __init__(
        self,
        during_fit: bool = False,
        settings: AppendixD = APPENDIX_D,
        mantissas: Sequence[float] = DEFAULT_MANTISSAS,
        start: int = 100_000,
        chunk_size: int = 250,
        seed: int = 0,
    ) -> None:
        self.during_fit = during_fit
        self.settings = settings
        self.schedule = LogSpacedSchedule(mantissas)
        self.start = start
        self.chunk_size = chunk_size
        self.seed = seed
        #: The latest estimates, ``{"marginal_likelihood/test": ..., "lower_bound/test": ..., ...}``.
        self.results: dict[str, float] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require_model(pl_module, type(self).__name__)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        after = pl_module.samples_evaluated
        before = pl_module.samples_before_step
        if self.during_fit and after >= self.start and self.schedule.due(max(before, self.start - 1), after):
            self.evaluate(trainer, pl_module, ("train", "test"))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.evaluate(trainer, pl_module, ("test",))

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, splits: Sequence[str]) -> dict[str, float]:
        """Both estimates (and the lower bound) on the first points of each split; logs and returns them."""
        datamodule = trainer.datamodule
        if not isinstance(datamodule, SplitData):
            raise TypeError("MarginalLikelihoodCallback reads the first points of each split from a data module "
                            "with splits (one of lit_vae.datamodules)")
        datamodule.setup()
        results, started = {}, time.perf_counter()
        with evaluating(pl_module), torch.inference_mode(False):
            for split in splits:
                means = self._estimate(trainer, pl_module, datamodule.splits[split][: self.settings.num_datapoints], split)
                results.update({f"{name}/{split}": value for name, value in means.items()})
        self.results = results
        log_evaluation(pl_module, {k: v for k, v in results.items() if not k.startswith("lower_bound")}, pl_module.samples_evaluated)
        for split in splits:
            others = (f", importance ({self.settings.importance_samples:,} samples) "
                      f"{results[f'marginal_likelihood_importance/{split}']:.2f}, "
                      f"lower bound {results[f'lower_bound/{split}']:.2f}") if f"lower_bound/{split}" in results else ""
            rank_zero_info(
                f"log p(x) of the first {self.settings.num_datapoints:,} {split} points at {pl_module.samples_evaluated:,} "
                f"samples: HMC {results[f'marginal_likelihood/{split}']:.2f}{others} nats per datapoint "
                f"({time.perf_counter() - started:.0f} s)"
            )
        return results

    def _estimate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, data: torch.Tensor, split: str) -> dict[str, float]:
        shard = data[trainer.global_rank :: trainer.world_size].to(pl_module.device)
        generator = seeded_generator(self.seed, pl_module.samples_evaluated, trainer.global_rank, int(split == "test"),
                                     generator=torch.Generator(device=pl_module.device))
        encoder = pl_module.has_encoder
        names = ("marginal_likelihood", "marginal_likelihood_importance", "lower_bound") if encoder else ("marginal_likelihood",)
        metrics = {name: MeanMetric().to(pl_module.device) for name in names}
        chunks = shard.split(self.chunk_size)
        show = trainer.is_global_zero and trainer.progress_bar_callback is not None
        progress = Progress(len(chunks) * (self.settings.burn_in + self.settings.num_samples), f"log p(x), {split}", show)
        for x in chunks:
            init = (pl_module.encode(x)[0].detach() if encoder else
                    prior_search(pl_module.log_joint, pl_module.prior_sample, x, self.settings.prior_draws, generator=generator))
            metrics["marginal_likelihood"].update(hmc_log_marginal(
                pl_module.log_joint, x, pl_module.latent_dim, settings=self.settings, init=init, generator=generator,
                on_iteration=progress.tick))
            if encoder:
                metrics["marginal_likelihood_importance"].update(
                    importance_log_marginal(pl_module, x, self.settings.importance_samples, generator=generator))
                with torch.no_grad():
                    metrics["lower_bound"].update(pl_module.lower_bound(x, generator=generator))
        progress.close()
        return {name: metric.compute().item() for name, metric in metrics.items()}


class Progress:
    """The HMC evaluation's progress, one tick per HMC iteration of every chunk: a bar on a
    terminal; elsewhere (a log file, a pipe) a plain line at each tenth, with no cursor codes."""

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
            print(f"{self.description}: {self.done / self.total:.0%} of {self.total:,} HMC iterations "
                  f"({time.perf_counter() - self.started:.0f} s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
