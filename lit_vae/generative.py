"""What every model here shares: the generative model p(x|z) p(z) of Section 3, its training
bookkeeping (samples evaluated, position-keyed noise, the paper-era Adagrad) and the guards
that keep a broken state out of checkpoints. ``VAE``, ``WakeSleep`` and ``MCEM`` build on it."""

from __future__ import annotations

import random
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR

from lit_vae.estimators import standard_normal_log_density
from lit_vae.networks import DECODERS, init_normal_

#: Noise streams of :meth:`GenerativeModel.noise_generator`: training steps, evaluation batches.
TRAIN_STREAM, EVAL_STREAM = 0, 1


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


class GenerativeModel(pl.LightningModule):
    """The generative model p_theta(x|z) p(z): a decoder (Eq. 11 or 12) under the prior N(0, I).

    Subclasses build their networks (``self.decoder``, and an encoder where they have one),
    then call :meth:`initialise`. Arguments as in ``VAE``.
    """

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        hidden_dim: int,
        likelihood: Literal["bernoulli", "gaussian"],
        learning_rate: float,
        adagrad_warmup_batches: int,
        train_size: int,
        init_std: float,
    ) -> None:
        super().__init__()
        check_positive(input_dim=input_dim, latent_dim=latent_dim, hidden_dim=hidden_dim,
                       learning_rate=learning_rate, train_size=train_size, init_std=init_std)
        if adagrad_warmup_batches < 0:
            raise ValueError(f"adagrad_warmup_batches must be >= 0, got {adagrad_warmup_batches}")
        if likelihood not in DECODERS:
            raise ValueError(f"likelihood must be one of {sorted(DECODERS)}, got {likelihood!r}")
        self.samples_evaluated = 0  # the x axis of Figures 2 and 3; saved in checkpoints
        self.samples_before_step = 0  # samples_evaluated before the latest training step
        self._noise: torch.Generator | None = None

    def initialise(self, init_std: float) -> None:
        """Draw all parameters from N(0, init_std^2), then the seed of the training noise."""
        init_normal_(self, init_std)
        # Drawn from the global RNG, so that ``seed_everything`` fixes it; saved with the parameters.
        self.register_buffer("noise_seed", torch.randint(0, 2**62, ()))

    # ----------------------------------------------------------------- the model
    def decode(self, z: Tensor) -> tuple[Tensor, ...]:
        """Parameters of p(x|z): ``(logits,)`` for Bernoulli, ``(mean, logvar)`` for Gaussian."""
        return self.decoder(z)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) for ``z`` of shape ``[..., B, Nz]``; returns ``[..., B]``."""
        return self.decoder.log_prob(x, self.decoder(z))

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) + log p(z) for ``z`` of shape ``[..., B, Nz]``; returns ``[..., B]``."""
        return self.log_likelihood(x, z) + standard_normal_log_density(z)

    def decode_mean(self, z: Tensor) -> Tensor:
        """The mean of p(x|z) (what Figures 4 and 5 show) for ``z`` of shape ``[..., Nz]``."""
        return self.decoder.mean(self.decoder(z))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Means of p(x|z) at ``n`` draws z ~ p(z) = N(0, I) (what Figure 5 shows); ``[n, D]``."""
        z = torch.randn((n, self.hparams.latent_dim), generator=generator, device=self.device)
        return self.decode_mean(z)

    def noise_generator(self, stream: int, *key: int) -> torch.Generator:
        """A generator seeded by (noise seed, rank, stream, key): noise that is a pure function of
        the position in training, so a resumed or sharded run draws exactly the same numbers."""
        if self._noise is None or self._noise.device != self.device:
            self._noise = torch.Generator(device=self.device)
        seed = hash((int(self.noise_seed), self.global_rank, stream, *key)) & (2**63 - 1)
        self._noise.manual_seed(seed)
        return self._noise

    # ----------------------------------------------------------------- training
    def check_world_size(self, world_size: int) -> None:
        """``ValueError`` if this model cannot train on ``world_size`` processes (all of these
        can, except ``MCEM``)."""

    def count_samples(self, batch: Tensor) -> None:
        """Add this step's datapoints, over all ranks, to ``samples_evaluated``; the callbacks'
        schedules read the step's interval (``samples_before_step``, ``samples_evaluated``]."""
        self.samples_before_step = self.samples_evaluated
        self.samples_evaluated += batch.shape[0] * self.trainer.world_size

    def check_finite(self, loss: Tensor) -> None:
        """Stop before a non-finite loss reaches backward and the update."""
        if not torch.isfinite(loss):
            raise NonFiniteError(self._non_finite_message(f"the loss is {loss.item()}"))

    def _non_finite_message(self, what: str) -> str:
        """Which step, how far training got, what broke, and that the last checkpoint is intact."""
        broken = [name for name, p in self.named_parameters() if not torch.isfinite(p).all()]
        cause = (f"the parameters {', '.join(broken)} are not finite: the update of step {self.global_step} "
                 "had a non-finite gradient" if broken else what)
        return (f"training step {self.global_step + 1} (after {self.samples_evaluated:,} training samples): {cause}. "
                "The run stops here without writing a checkpoint of this state; the last checkpoint written "
                "holds the last good state. A smaller --model.init_args.learning_rate usually avoids this.")

    def configure_optimizers(self) -> dict[str, Any]:
        """Adagrad (the paper's optimizer) with the N(0, I) parameter prior as weight decay 1/N,
        after ``adagrad_warmup_batches`` updates that only accumulate squared gradients."""
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
        checkpoint["model_class"] = type(self).__name__
        # What was logged up to this checkpoint reaches the disk before it does: a run killed
        # later loses no logged point that its resume will not log again.
        for logger in self.trainer.loggers:
            logger.save()
        # Training draws its noise and data order from generators keyed by position, never from
        # the global ones; they are saved all the same, for user code (callbacks) that does.
        checkpoint["rng_states"] = global_rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.samples_evaluated = checkpoint.get("samples_evaluated", 0)
        # Only when training resumes: loading a model to use it leaves the global RNGs alone.
        if self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING and "rng_states" in checkpoint:
            set_global_rng_states(checkpoint["rng_states"])


def check_positive(**values: float) -> None:
    """``ValueError`` naming the first argument that is not positive."""
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")


def global_rng_states() -> dict[str, Any]:
    """The states of torch's, numpy's and Python's global generators, as tensors and numbers
    (what ``torch.load(weights_only=True)`` reads back)."""
    _, keys, position, has_gauss, gauss = np.random.get_state()
    version, state, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": torch.tensor(state, dtype=torch.int64), "gauss": python_gauss},
    }


def set_global_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`global_rng_states` returned."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["gauss"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))
