"""The AEVB algorithm (Algorithm 1) as a LightningModule."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric

from lit_vae.estimators import ESTIMATORS, standard_normal_log_density
from lit_vae.logging import log_at_samples
from lit_vae.networks import DECODERS, GaussianMLPEncoder, init_normal_

_TRAIN_STREAM, _EVAL_STREAM = 0, 1


class AccumulateOnly:
    """Learning-rate factor 0 for the first ``batches`` minibatches, 1 after.

    With Adagrad this makes the first minibatches only accumulate squared gradients, as the
    paper-era code did, so the first real step is not taken with a one-sample denominator.
    """

    def __init__(self, batches: int) -> None:
        self.batches = batches

    def __call__(self, step: int) -> float:
        return 0.0 if step < self.batches else 1.0


class NonFiniteError(RuntimeError):
    """Training met a non-finite loss or non-finite parameters. The run stops before the broken
    state is used for an update or written to a checkpoint, so the last checkpoint stays good."""


class VAE(pl.LightningModule):
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
        super().__init__()
        _check_positive(input_dim=input_dim, latent_dim=latent_dim, hidden_dim=hidden_dim,
                        num_samples=num_samples, learning_rate=learning_rate, train_size=train_size,
                        init_std=init_std)
        if adagrad_warmup_batches < 0:
            raise ValueError(f"adagrad_warmup_batches must be >= 0, got {adagrad_warmup_batches}")
        if likelihood not in DECODERS:
            raise ValueError(f"likelihood must be one of {sorted(DECODERS)}, got {likelihood!r}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {sorted(ESTIMATORS)}, got {estimator!r}")
        self.save_hyperparameters()
        self.encoder = GaussianMLPEncoder(input_dim, hidden_dim, latent_dim)
        self.decoder = DECODERS[likelihood](latent_dim, hidden_dim, input_dim)
        init_normal_(self, init_std)
        self._estimator = ESTIMATORS[estimator]
        self._estimate = torch.compile(self._estimate_eager) if compile else self._estimate_eager
        # Seed of the reparameterisation noise, drawn from the global RNG so that
        # ``seed_everything`` fixes it; saved with the parameters.
        self.register_buffer("noise_seed", torch.randint(0, 2**62, ()))
        self.samples_evaluated = 0  # the x axis of Figure 2; saved in checkpoints
        self._noise: torch.Generator | None = None
        self.validation_bound = MeanMetric()
        self.test_bound = MeanMetric()

    # ----------------------------------------------------------------- the model
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Parameters (mu, log sigma^2) of q(z|x), each ``[B, Nz]``."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> tuple[Tensor, ...]:
        """Parameters of p(x|z): ``(logits,)`` for Bernoulli, ``(mean, logvar)`` for Gaussian."""
        return self.decoder(z)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) for ``z`` of shape ``[..., B, Nz]``; returns ``[..., B]``."""
        return self.decoder.log_prob(x, self.decoder(z))

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) + log p(z) for ``z`` of shape ``[..., B, Nz]``; returns ``[..., B]``."""
        return self.log_likelihood(x, z) + standard_normal_log_density(z)

    def lower_bound(self, x: Tensor, num_samples: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """SGVB estimate of the lower bound L(theta, phi; x) per datapoint, in nats (Eq. 6 or 7)."""
        eps = torch.randn((num_samples, x.shape[0], self.hparams.latent_dim),
                          generator=generator, device=x.device, dtype=x.dtype)
        return self._estimate(x, eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.lower_bound(x, self.hparams.num_samples)

    def decode_mean(self, z: Tensor) -> Tensor:
        """The mean of p(x|z) (what Figures 4 and 5 show) for ``z`` of shape ``[..., Nz]``."""
        return self.decoder.mean(self.decoder(z))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Means of p(x|z) at ``n`` draws z ~ p(z) = N(0, I) (what Figure 5 shows); ``[n, D]``."""
        z = torch.randn((n, self.hparams.latent_dim), generator=generator, device=self.device)
        return self.decode_mean(z)

    def _estimate_eager(self, x: Tensor, eps: Tensor) -> Tensor:
        mu, logvar = self.encoder(x)
        return self._estimator(x, mu, logvar, eps, self.log_likelihood)

    def noise_generator(self, stream: int, *key: int) -> torch.Generator:
        """A generator seeded by (noise seed, rank, stream, key): noise that is a pure function of
        the position in training, so a resumed or sharded run draws exactly the same numbers."""
        if self._noise is None or self._noise.device != self.device:
            self._noise = torch.Generator(device=self.device)
        seed = hash((int(self.noise_seed), self.global_rank, stream, *key)) & (2**63 - 1)
        self._noise.manual_seed(seed)
        return self._noise

    # ----------------------------------------------------------------- AEVB (Algorithm 1)
    def training_step(self, batch: Tensor, batch_idx: int) -> dict[str, Tensor]:
        generator = self.noise_generator(_TRAIN_STREAM, self.current_epoch, batch_idx)
        bound = self.lower_bound(batch, self.hparams.num_samples, generator)
        # Eq. 8 per datapoint; the parameter prior enters as Adagrad's weight decay.
        loss = -bound.mean()
        if not torch.isfinite(loss):  # stop before this loss reaches backward and the update
            raise NonFiniteError(self._non_finite_message(f"the loss is {loss.item()}"))
        self.samples_evaluated += batch.shape[0] * self.trainer.world_size
        return {"loss": loss, "lower_bound": bound.detach()}

    def _non_finite_message(self, what: str) -> str:
        """Which step, how far training got, what broke, and that the last checkpoint is intact."""
        broken = [name for name, p in self.named_parameters() if not torch.isfinite(p).all()]
        cause = (f"the parameters {', '.join(broken)} are not finite: the update of step {self.global_step} "
                 "had a non-finite gradient" if broken else what)
        return (f"training step {self.global_step + 1} (after {self.samples_evaluated:,} training samples): {cause}. "
                "The run stops here without writing a checkpoint of this state; the last checkpoint written "
                "holds the last good state. A smaller --model.init_args.learning_rate usually avoids this.")

    def evaluation_bound(self, batch: Tensor, batch_idx: int) -> Tensor:
        """The lower bound of an evaluation minibatch, with noise fixed by its index, so the same
        checkpoint and data always give the same number (during training and in ``test``)."""
        return self.lower_bound(batch, self.hparams.num_samples, self.noise_generator(_EVAL_STREAM, batch_idx))

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

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.Adagrad(
            self.parameters(), lr=hp.learning_rate, eps=1e-8,
            weight_decay=1.0 / hp.train_size if hp.parameter_prior else 0.0,
            # One fused kernel instead of a Python loop over parameters: for 784-500-20 on one
            # CPU thread, 0.7 ms a step instead of 3.0 ms; the same update up to float rounding.
            fused=self.device.type == "cpu",
        )
        warmup = LambdaLR(optimizer, AccumulateOnly(hp.adagrad_warmup_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Once per checkpoint, not per step: never write parameters that an update broke.
        if not all(torch.isfinite(p).all() for p in self.parameters()):
            raise NonFiniteError(self._non_finite_message("non-finite parameters"))
        checkpoint["samples_evaluated"] = self.samples_evaluated

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.samples_evaluated = checkpoint.get("samples_evaluated", 0)


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
