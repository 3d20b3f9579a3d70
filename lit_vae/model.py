"""The AEVB algorithm (Algorithm 1) as a LightningModule."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torchmetrics import CatMetric, MeanMetric

from lit_vae.datamodules.batches import Batch
from lit_vae.estimators import ESTIMATORS, active_units, kl_per_dimension, kl_to_standard_normal
from lit_vae.generative import EVAL_STREAM, GenerativeModel, check_positive
from lit_vae.logging import log_evaluation, log_histogram_at_samples


class VAE(GenerativeModel):
    """Variational auto-encoder trained with AEVB (Algorithm 1) on the SGVB estimator.

    Args:
        estimator: SGVB estimator ``A`` (Eq. 6) or ``B`` (Eq. 7, analytic KL; the default).
        num_samples: L, samples of z per datapoint in the training estimate (the paper: 1).
        **kwargs: the generative model's (:class:`~lit_vae.generative.GenerativeModel`):
            ``latent_dim``, ``hidden_dim``, ``likelihood``, ``learning_rate``, ...
    """

    has_encoder = True

    def __init__(self, estimator: Literal["A", "B"] = "B", num_samples: int = 1, **kwargs: Any) -> None:
        check_positive(num_samples=num_samples)
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {sorted(ESTIMATORS)}, got {estimator!r}")
        super().__init__(**kwargs)
        self._estimator = ESTIMATORS[estimator]
        self.validation_bound = MeanMetric()
        self.test_bound = MeanMetric()
        self.test_kl = MeanMetric()
        self.test_means = CatMetric()  # E_q[z|x] of every test point, for the active units
        self.test_kl_dims = CatMetric()  # and its KL per latent dimension

    # ----------------------------------------------------------------- the model
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Parameters (mu, log sigma^2) of q(z|x), each ``[B, Nz]``."""
        return self.encoder(x)

    def lower_bound(self, x: Tensor, num_samples: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """SGVB estimate of the lower bound L(theta, phi; x) per datapoint, in nats (Eq. 6 or 7)."""
        return self.lower_bound_and_kl(x, num_samples, generator)[0]

    def lower_bound_and_kl(self, x: Tensor, num_samples: int = 1,
                           generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The lower bound per datapoint and its KL term D_KL(q(z|x) || p(z)) in closed form
        (Appendix B). The bound's other term, the expected reconstruction log-likelihood
        E_q[log p(x|z)] of Eq. 7, is their sum (estimated, with estimator A, through its noise)."""
        mu, logvar = self.encoder(x)
        bound = self._estimator(x, mu, logvar, self.noise(x, num_samples, generator), self.log_likelihood)
        return bound, kl_to_standard_normal(mu, logvar)

    def noise(self, x: Tensor, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """eps ~ N(0, I) of shape ``[L, B, Nz]``: the noise of the reparameterisation (Eq. 10)."""
        return torch.randn((num_samples, x.shape[0], self.latent_dim), generator=generator,
                           device=x.device, dtype=x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.lower_bound(x, self.hparams.num_samples)

    # ----------------------------------------------------------------- AEVB (Algorithm 1)
    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        generator = self.training_noise()
        bound, kl = self.lower_bound_and_kl(batch.x, self.hparams.num_samples, generator)
        # Eq. 8 per datapoint; the parameter prior enters as Adagrad's weight decay.
        loss = -bound.mean()
        self.check_finite(loss)
        self.count_samples(batch)
        return {"loss": loss, "lower_bound": bound.detach(), "kl": kl.detach()}

    def evaluation_bound(self, batch: Batch, batch_idx: int) -> tuple[Tensor, Tensor]:
        """The lower bound and KL term of an evaluation minibatch, with noise fixed by its index,
        so the same checkpoint and data always give the same numbers (during training and in ``test``)."""
        return self.lower_bound_and_kl(batch.x, self.hparams.num_samples, self.noise_generator(EVAL_STREAM, batch_idx))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.validation_bound.update(self.evaluation_bound(batch, batch_idx)[0])

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        bound, kl = self.evaluation_bound(batch, batch_idx)
        self.test_bound.update(bound)
        self.test_kl.update(kl)
        mu, logvar = self.encode(batch.x)
        self.test_means.update(mu)
        self.test_kl_dims.update(kl_per_dimension(mu, logvar))

    def on_validation_epoch_end(self) -> None:
        self.log_bound("lower_bound/validation", self.validation_bound)

    def on_test_epoch_end(self) -> None:
        self.log_bound("lower_bound/test", self.test_bound)

    def log_bound(self, tag: str, metric: MeanMetric) -> float:
        """The mean of ``metric`` (reset after), logged as ``tag`` at the samples evaluated: the
        one way an evaluation's lower bound is logged, by ``test`` and ``validate`` and by the
        lower-bound callback's evaluations during ``fit`` (which run :meth:`test_step`). The test
        bound comes with its terms, ``kl/test`` and ``reconstruction/test``."""
        value = metric.compute().item()
        metric.reset()
        log_evaluation(self, {tag: value}, self.samples_evaluated, prog_bar=True)
        if metric is self.test_bound:  # the bound's two terms (Eq. 7) and the active units, over the same test batches
            kl = self.test_kl.compute().item()
            units = active_units(self.test_means.compute())
            kl_dims = self.test_kl_dims.compute().mean(0)
            for metric in (self.test_kl, self.test_means, self.test_kl_dims):
                metric.reset()
            log_evaluation(self, {"kl/test": kl, "reconstruction/test": value + kl, "latent/active_units": float(units)},
                           self.samples_evaluated)
            log_histogram_at_samples(self.trainer, "latent/kl_per_dimension", kl_dims, self.samples_evaluated)
        if not self.trainer.sanity_checking and self.trainer.state.fn != TrainerFn.FITTING:
            rank_zero_info(f"{tag} = {value:.2f} nats per datapoint (model trained on {self.samples_evaluated:,} samples)")
        return value
