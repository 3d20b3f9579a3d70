"""The AEVB algorithm (Algorithm 1) as a LightningModule."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import CatMetric, MeanMetric

from lit_vae.datamodules.batches import Batch
from lit_vae.estimators import ESTIMATORS, active_units, kl_per_dimension, log_importance_weights, log_mean_exp
from lit_vae.generative import EVAL_STREAM, GenerativeModel, check_positive
from lit_vae.interfaces import evaluating
from lit_vae.logging import log_evaluation, log_histogram_at_samples


class BoundTerms(NamedTuple):
    """An SGVB estimate of the lower bound per datapoint, ``[B]``, with what it is made of: the
    posterior means and log-variances ``[B, Nz]`` and the closed-form KL term of each latent
    dimension ``[B, Nz]`` (Appendix B). These are read, never trained on, so they carry no gradient. The bound's other
    term, E_q[log p(x|z)] of Eq. 7, is ``bound + kl`` (with estimator A, estimated through its noise).
    ``objective`` is what training maximises: ``bound`` itself for estimators A and B, the
    importance-weighted bound L_k on the same draws of z for ``iwae`` (``bound`` is then L^A)."""

    bound: Tensor
    mu: Tensor
    logvar: Tensor
    kl_per_dimension: Tensor
    objective: Tensor

    @property
    def kl(self) -> Tensor:
        """D_KL(q(z|x) || p(z)) per datapoint, ``[B]``."""
        return self.kl_per_dimension.sum(-1)


@dataclass(frozen=True)
class Evaluation:
    """What an evaluation pass over a split measured, as means per datapoint in nats: the SGVB
    lower bound (Eq. 7), the closed-form KL term of each latent dimension (Appendix B) and the
    active units among the posterior means. The bound's other term, E_q[log p(x|z)], is
    ``lower_bound + kl``."""

    lower_bound: float
    kl_per_dimension: Tensor
    active_units: int
    #: For ``iwae``, the mean of :attr:`BoundTerms.objective`, the importance-weighted bound L_k; else ``None``.
    objective: float | None = None

    @property
    def kl(self) -> float:
        return self.kl_per_dimension.sum().item()

    @property
    def reconstruction(self) -> float:
        return self.lower_bound + self.kl

    def terms(self, split: str) -> dict[str, float]:
        """The bound's terms and the active units as logged: ``kl/<split>``, ``reconstruction/<split>``,
        ``latent/active_units``, and ``iwae_bound/<split>`` where there is one."""
        iwae = {} if self.objective is None else {f"iwae_bound/{split}": self.objective}
        return {f"kl/{split}": self.kl, f"reconstruction/{split}": self.reconstruction,
                "latent/active_units": float(self.active_units), **iwae}


class EvaluationMeter(nn.Module):
    """Accumulates an evaluation pass's :class:`BoundTerms` minibatch by minibatch (torchmetrics:
    reduced over the ranks under DDP) into an :class:`Evaluation`; with ``importance_weighted``
    (estimator ``iwae``) its L_k too."""

    def __init__(self, importance_weighted: bool = False) -> None:
        super().__init__()
        self.importance_weighted = importance_weighted
        self.bound = MeanMetric()
        self.objective = MeanMetric()
        self.means = CatMetric()  # E_q[z|x] of every point, for the active units
        self.kl_dims = CatMetric()  # the KL per latent dimension of every point

    def update(self, terms: BoundTerms) -> None:
        self.bound.update(terms.bound)
        if self.importance_weighted:
            self.objective.update(terms.objective)
        self.means.update(terms.mu)
        self.kl_dims.update(terms.kl_per_dimension)

    def compute(self) -> Evaluation:
        """The pass's :class:`Evaluation`; the meter is then empty for the next pass."""
        evaluation = Evaluation(self.bound.compute().item(), self.kl_dims.compute().mean(0), active_units(self.means.compute()),
                                self.objective.compute().item() if self.importance_weighted else None)
        for metric in (self.bound, self.objective, self.means, self.kl_dims):
            metric.reset()
        return evaluation


class VAE(GenerativeModel):
    """Variational auto-encoder trained with AEVB (Algorithm 1) on the SGVB estimator.

    Args:
        estimator: SGVB estimator ``A`` (Eq. 6) or ``B`` (Eq. 7, analytic KL; the default), or
            ``iwae``, the importance-weighted bound L_k of Burda et al. (2015) with k =
            ``num_samples``. ``lower_bound/*`` is the ELBO for all three (for ``iwae`` L^A on the
            same draws of z, which costs nothing more), so curves compare across estimators; an
            ``iwae`` run also logs its test L_k as ``iwae_bound/test``.
        num_samples: L, samples of z per datapoint in the training estimate (the paper: 1; the
            k of ``iwae``).
        **kwargs: the generative model's (:class:`~lit_vae.generative.GenerativeModel`):
            ``latent_dim``, ``hidden_dim``, ``likelihood``, ``learning_rate``, ...
    """

    has_encoder = True

    def __init__(self, estimator: Literal["A", "B", "iwae"] = "B", num_samples: int = 1, **kwargs: Any) -> None:
        check_positive(num_samples=num_samples)
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {sorted(ESTIMATORS)}, got {estimator!r}")
        super().__init__(**kwargs)
        self._estimator = ESTIMATORS[estimator]
        self.validation_meter = EvaluationMeter(importance_weighted=estimator == "iwae")
        self.test_meter = EvaluationMeter(importance_weighted=estimator == "iwae")

    # ----------------------------------------------------------------- the model
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Parameters (mu, log sigma^2) of q(z|x), each ``[B, Nz]``."""
        return self.encoder(x)

    def lower_bound(self, x: Tensor, num_samples: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """SGVB estimate of the lower bound L(theta, phi; x) per datapoint, in nats (Eq. 6 or 7)."""
        return self.bound_terms(x, num_samples, generator).bound

    def bound_terms(self, x: Tensor, num_samples: int = 1, generator: torch.Generator | None = None) -> BoundTerms:
        """The lower bound of :meth:`lower_bound` with the posterior means and KL terms of the
        same encoder pass (:class:`BoundTerms`)."""
        mu, logvar = self.encoder(x)
        eps = self.noise(x, num_samples, generator)
        if self.hparams["estimator"] == "iwae":  # L_k and L^A from the same log importance weights
            log_weights = log_importance_weights(x, mu, logvar, eps, self.log_likelihood)
            objective, bound = log_mean_exp(log_weights), log_weights.mean(0)
        else:
            objective = bound = self._estimator(x, mu, logvar, eps, self.log_likelihood)
        mu, logvar = mu.detach(), logvar.detach()
        return BoundTerms(bound, mu, logvar, kl_per_dimension(mu, logvar), objective)

    def noise(self, x: Tensor, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """eps ~ N(0, I) of shape ``[L, B, Nz]``: the noise of the reparameterisation (Eq. 10)."""
        return torch.randn((num_samples, x.shape[0], self.latent_dim), generator=generator,
                           device=x.device, dtype=x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.lower_bound(x, self.hparams["num_samples"])

    # ----------------------------------------------------------------- AEVB (Algorithm 1)
    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        generator = self.training_noise()
        terms = self.bound_terms(batch.x, self.hparams["num_samples"], generator)
        # Eq. 8 per datapoint; the parameter prior enters as Adagrad's weight decay.
        loss = -terms.objective.mean()
        self.check_finite(loss)
        self.count_samples(batch)
        return {"loss": loss, "lower_bound": terms.bound.detach(), "kl": terms.kl}

    def evaluation_terms(self, batch: Batch, batch_idx: int) -> BoundTerms:
        """The bound and its terms for an evaluation minibatch, with noise fixed by its index, so
        the same checkpoint and data always give the same numbers (during training and in ``test``)."""
        return self.bound_terms(batch.x, self.hparams["num_samples"], self.noise_generator(EVAL_STREAM, batch_idx))

    @torch.no_grad()
    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        """Per datapoint: q(z|x)'s ``mu`` and ``logvar``, the ``reconstruction`` (the decoder's mean
        at ``mu``), the ``lower_bound`` as ``test`` estimates it, and the datapoint's ``index`` in the split."""
        terms = self.evaluation_terms(batch, batch_idx)
        return {"index": batch.index, "mu": terms.mu, "logvar": terms.logvar, "reconstruction": self.decode_mean(terms.mu),
                "lower_bound": terms.bound}

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.validation_meter.update(self.evaluation_terms(batch, batch_idx))

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.test_meter.update(self.evaluation_terms(batch, batch_idx))

    def on_validation_epoch_end(self) -> None:
        self.log_evaluation("validation", self.validation_meter.compute())

    def on_test_epoch_end(self) -> None:
        self.log_evaluation("test", self.test_meter.compute())

    @torch.no_grad()
    def evaluate(self, batches: Iterable[Batch]) -> Evaluation:
        """The test evaluation of ``batches`` (a split's minibatches) in eval mode, as a value:
        what ``test`` measures for the same state, computed by the same steps. The lower-bound
        callback's evaluations during ``fit``."""
        with evaluating(self):
            for batch_idx, batch in enumerate(batches):
                self.test_meter.update(self.evaluation_terms(self.transfer_batch_to_device(batch, self.device, 0), batch_idx))
        return self.test_meter.compute()

    def log_evaluation(self, split: str, evaluation: Evaluation) -> None:
        """Log ``evaluation`` of ``split`` at the samples evaluated: ``lower_bound/<split>`` and,
        for the test split, its terms (:meth:`Evaluation.terms`) and the KL per dimension as the
        histogram ``latent/kl_per_dimension``. The one way an evaluation is logged, by ``test``,
        ``validate`` and the lower-bound callback during ``fit``; outside ``fit`` it is printed."""
        log_evaluation(self, {f"lower_bound/{split}": evaluation.lower_bound}, self.samples_evaluated, prog_bar=True)
        if split == "test":
            log_evaluation(self, evaluation.terms(split), self.samples_evaluated)
            log_histogram_at_samples(self.trainer, "latent/kl_per_dimension", evaluation.kl_per_dimension, self.samples_evaluated)
        if not self.trainer.sanity_checking and self.trainer.state.fn != TrainerFn.FITTING:
            iwae = "" if evaluation.objective is None else (
                f"; iwae_bound/{split} = {evaluation.objective:.2f} (L_k, k = {self.hparams['num_samples']})")
            rank_zero_info(f"lower_bound/{split} = {evaluation.lower_bound:.2f} nats per datapoint{iwae} "
                           f"(model trained on {self.samples_evaluated:,} samples)")
