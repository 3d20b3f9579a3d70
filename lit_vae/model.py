"""The AEVB algorithm (Algorithm 1) as a LightningModule."""

from __future__ import annotations

from typing import Literal

import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torchmetrics import MeanMetric

from lit_vae.estimators import ESTIMATORS
from lit_vae.generative import EVAL_STREAM, TRAIN_STREAM, GenerativeModel, check_positive
from lit_vae.logging import log_at_samples
from lit_vae.networks import DECODERS, GaussianMLPEncoder


class VAE(GenerativeModel):
    """Variational auto-encoder trained with AEVB (Algorithm 1) on the SGVB estimator.

    Args:
        input_dim: number of pixels D (linked from the data module by the CLI).
        latent_dim: Nz, the size of z (Figure 2: MNIST 3, 5, 10, 20, 200; Frey Face 2, 5, 10, 20).
        hidden_dim: units in each tanh hidden layer (500 for MNIST, 200 for Frey Face).
        likelihood: ``bernoulli`` (Eq. 11, MNIST) or ``gaussian`` (Eq. 12, Frey Face).
        estimator: SGVB estimator ``A`` (Eq. 6) or ``B`` (Eq. 7, analytic KL; the default).
        num_samples: L, samples of z per datapoint in the training estimate (the paper: 1).
        learning_rate: Adagrad's global step size (the paper picks from 0.01, 0.02, 0.1).
        adagrad_warmup_batches: minibatches that only accumulate squared gradients before the
            first update (the paper-era code: 100).
        train_size: N, the training-set size. The N(0, I) prior on the parameters contributes
            -||theta||^2 / (2N) per datapoint, i.e. weight decay 1/N (linked from the data module).
        parameter_prior: whether to use that prior (Section 5: "weight decay").
        init_std: standard deviation of the N(0, init_std^2) initialisation of all parameters.
        compile: run the per-step computation through ``torch.compile`` (same fp32 numerics).
    """

    def __init__(
        self,
        input_dim: int = 784,
        latent_dim: int = 20,
        hidden_dim: int = 500,
        likelihood: Literal["bernoulli", "gaussian"] = "bernoulli",
        estimator: Literal["A", "B"] = "B",
        num_samples: int = 1,
        learning_rate: float = 0.02,
        adagrad_warmup_batches: int = 100,
        train_size: int = 50_000,
        parameter_prior: bool = True,
        init_std: float = 0.01,
        compile: bool = False,
    ) -> None:
        super().__init__(input_dim, latent_dim, hidden_dim, likelihood, learning_rate, adagrad_warmup_batches,
                         train_size, init_std)
        check_positive(num_samples=num_samples)
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {sorted(ESTIMATORS)}, got {estimator!r}")
        self.save_hyperparameters()
        self.encoder = GaussianMLPEncoder(input_dim, hidden_dim, latent_dim)
        self.decoder = DECODERS[likelihood](latent_dim, hidden_dim, input_dim)
        self.initialise(init_std)
        self._estimator = ESTIMATORS[estimator]
        self._estimate = torch.compile(self._estimate_eager) if compile else self._estimate_eager
        self.validation_bound = MeanMetric()
        self.test_bound = MeanMetric()

    # ----------------------------------------------------------------- the model
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Parameters (mu, log sigma^2) of q(z|x), each ``[B, Nz]``."""
        return self.encoder(x)

    def lower_bound(self, x: Tensor, num_samples: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """SGVB estimate of the lower bound L(theta, phi; x) per datapoint, in nats (Eq. 6 or 7)."""
        return self._estimate(x, self.noise(x, num_samples, generator))

    def noise(self, x: Tensor, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """eps ~ N(0, I) of shape ``[L, B, Nz]``: the noise of the reparameterisation (Eq. 10)."""
        return torch.randn((num_samples, x.shape[0], self.hparams.latent_dim), generator=generator,
                           device=x.device, dtype=x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.lower_bound(x, self.hparams.num_samples)

    def _estimate_eager(self, x: Tensor, eps: Tensor) -> Tensor:
        mu, logvar = self.encoder(x)
        return self._estimator(x, mu, logvar, eps, self.log_likelihood)

    # ----------------------------------------------------------------- AEVB (Algorithm 1)
    def training_step(self, batch: Tensor, batch_idx: int) -> dict[str, Tensor]:
        generator = self.noise_generator(TRAIN_STREAM, self.current_epoch, batch_idx)
        bound = self.lower_bound(batch, self.hparams.num_samples, generator)
        # Eq. 8 per datapoint; the parameter prior enters as Adagrad's weight decay.
        loss = -bound.mean()
        self.check_finite(loss)
        self.count_samples(batch)
        return {"loss": loss, "lower_bound": bound.detach()}

    def evaluation_bound(self, batch: Tensor, batch_idx: int) -> Tensor:
        """The lower bound of an evaluation minibatch, with noise fixed by its index, so the same
        checkpoint and data always give the same number (during training and in ``test``)."""
        return self.lower_bound(batch, self.hparams.num_samples, self.noise_generator(EVAL_STREAM, batch_idx))

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self.validation_bound.update(self.evaluation_bound(batch, batch_idx))

    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        self.test_bound.update(self.evaluation_bound(batch, batch_idx))

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("lower_bound/validation", self.validation_bound)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("lower_bound/test", self.test_bound)

    def _log_evaluation(self, tag: str, metric: MeanMetric) -> None:
        value = metric.compute()
        metric.reset()
        self.log(tag, value, logger=False)  # in trainer.callback_metrics
        if self.trainer.sanity_checking:
            return
        # Straight to the loggers: the step is samples evaluated, not Lightning's step count.
        log_at_samples(self.trainer, {tag: value.item()}, self.samples_evaluated)
        if self.trainer.state.fn != TrainerFn.FITTING:
            rank_zero_info(f"{tag} = {value.item():.2f} nats per datapoint (model trained on {self.samples_evaluated:,} samples)")
