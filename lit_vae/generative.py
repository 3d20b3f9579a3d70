"""The generative model of Section 3, p_theta(x|z) p(z), as the base of every model here
(``VAE``, ``WakeSleep``, ``MCEM``): its hyperparameters, networks, initialisation, the
paper-era Adagrad, and the count of training samples evaluated (the x axis of Figure 2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any, Literal, Self, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR

from lit_vae.datamodules.batches import Batch
from lit_vae.estimators import standard_normal_log_density
from lit_vae.interfaces import NonFiniteError, non_finite_message
from lit_vae.logging import log_hparams, log_layout
from lit_vae.networks import DECODERS, BernoulliMLPDecoder, GaussianMLPDecoder, GaussianMLPEncoder, init_normal_
from lit_vae.seeding import seeded_generator

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


class GenerativeModel(pl.LightningModule):
    """p_theta(x|z) p(z): a decoder (Eq. 11 or 12) under the prior N(0, I), and the recognition
    model q_phi(z|x) (Appendix C.2) of the methods that have one (``has_encoder``).

    Subclasses add their own hyperparameters as keyword arguments and pass the rest on; every
    hyperparameter of the chain is saved (``self.hparams``), the networks are built (encoder
    first, then decoder) and all parameters drawn from N(0, ``init_std``^2) here.

    Args:
        input_dim: number of pixels D (linked from the data module by the CLI).
        latent_dim: Nz, the size of z (Figure 2: MNIST 3, 5, 10, 20, 200; Frey Face 2, 5, 10, 20).
        hidden_dim: units of the one tanh hidden layer (500 for MNIST, 200 for Frey Face).
        hidden_dims: instead of ``hidden_dim``, several tanh hidden layers: the encoder's sizes
            from the input side (e.g. ``[200, 200]``, the IWAE paper's one-stochastic-layer
            model); the decoder's are the same list reversed. Default: the paper's one layer.
        likelihood: ``bernoulli`` (Eq. 11, MNIST) or ``gaussian`` (Eq. 12, Frey Face).
        learning_rate: Adagrad's global step size (the paper picks from 0.01, 0.02, 0.1).
        adagrad_warmup_batches: minibatches that only accumulate squared gradients before the
            first update (the paper-era code: 100).
        train_size: N, the training-set size. The N(0, I) prior on the parameters contributes
            -||theta||^2 / (2N) per datapoint, i.e. weight decay 1/N (linked from the data module).
        parameter_prior: whether to use that prior (Section 5: "weight decay").
        prior_on: the parameters under that prior: ``all`` (weights and biases) or ``weights``
            (the weight matrices only, as in the paper-era code).
        init_std: standard deviation of the N(0, init_std^2) initialisation of all parameters.
        encoder_logvar_scale: s in log sigma^2 = s (W5 h + b5) of the recognition model (1: off;
            the paper-era code is said to use 0.1; see :class:`~lit_vae.networks.GaussianMLPEncoder`).
        decoder_logvar_bounded: whether the Gaussian decoder's log-variance is kept in
            :data:`~lit_vae.networks.LOGVAR_RANGE` (false: unbounded, as the paper-era code).
    """

    #: Whether the method has a recognition model q(z|x) (and with it a lower bound).
    has_encoder: bool = False
    encoder: GaussianMLPEncoder
    decoder: BernoulliMLPDecoder | GaussianMLPDecoder
    noise_seed: Tensor

    def __init__(
        self,
        *,
        input_dim: int = 784,
        latent_dim: int = 20,
        hidden_dim: int = 500,
        hidden_dims: list[int] | None = None,
        likelihood: Literal["bernoulli", "gaussian"] = "bernoulli",
        learning_rate: float = 0.02,
        adagrad_warmup_batches: int = 100,
        train_size: int = 50_000,
        parameter_prior: bool = True,
        prior_on: Literal["all", "weights"] = "all",
        init_std: float = 0.01,
        encoder_logvar_scale: float = 1.0,
        decoder_logvar_bounded: bool = True,
    ) -> None:
        super().__init__()
        check_positive(input_dim=input_dim, latent_dim=latent_dim, hidden_dim=hidden_dim,
                       learning_rate=learning_rate, train_size=train_size, init_std=init_std,
                       encoder_logvar_scale=encoder_logvar_scale)
        if adagrad_warmup_batches < 0:
            raise ValueError(f"adagrad_warmup_batches must be >= 0, got {adagrad_warmup_batches}")
        if likelihood not in DECODERS:
            raise ValueError(f"likelihood must be one of {sorted(DECODERS)}, got {likelihood!r}")
        if hidden_dims is not None:
            if not hidden_dims:
                raise ValueError("hidden_dims must name at least one layer, e.g. [200, 200]; or leave it out for one of hidden_dim")
            check_positive(**{f"hidden_dims[{i}]": size for i, size in enumerate(hidden_dims)})
        if prior_on not in ("all", "weights"):
            raise ValueError(f"prior_on must be 'all' or 'weights', got {prior_on!r}")
        self.save_hyperparameters()  # this class's arguments and those of every subclass's __init__
        layers = hidden_dim if hidden_dims is None else list(hidden_dims)
        if self.has_encoder:
            self.encoder = GaussianMLPEncoder(input_dim, layers, latent_dim, encoder_logvar_scale)
        bounds = {} if likelihood != "gaussian" or decoder_logvar_bounded else {"logvar_range": None}
        self.decoder = DECODERS[likelihood](latent_dim, layers if isinstance(layers, int) else layers[::-1], input_dim, **bounds)
        init_normal_(self, init_std)
        # Drawn from the global RNG, so that ``seed_everything`` fixes it; saved with the parameters.
        self.register_buffer("noise_seed", torch.randint(0, 2**62, ()))
        self.samples_evaluated: int = 0  # the x axis of Figures 2 and 3; saved in checkpoints
        self.samples_before_step: int = 0  # samples_evaluated before the latest training step
        self._noise: torch.Generator | None = None

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path | IO[Any], map_location: Any = None,
                             hparams_file: str | Path | None = None, strict: bool | None = None,
                             weights_only: bool | None = None, **kwargs: Any) -> Self:
        """Lightning's ``load_from_checkpoint``, always with ``weights_only=True``: this project's
        checkpoints hold only tensors and plain values, and a file that needs more (a pickle
        that would run code) is refused by torch's restricted unpickler."""
        return super().load_from_checkpoint(checkpoint_path, map_location, hparams_file, strict, weights_only=True, **kwargs)

    def on_fit_start(self) -> None:
        """The run in TensorBoard's HPARAMS tab: the model's hyperparameters, the model and data
        module classes and the seed (Lightning's ``PL_GLOBAL_SEED``), beside the final bounds;
        and the Custom Scalars tab's layout."""
        log_layout(self.trainer)
        seed = os.environ.get("PL_GLOBAL_SEED")
        data = getattr(self.trainer, "datamodule", None)
        log_hparams(self.trainer, {
            **{key: value for key, value in self.hparams.items() if not key.startswith("_")},  # not LightningCLI's own
            "model": type(self).__name__, "data": type(data).__name__ if data is not None else "none",
            "seed": int(seed) if seed is not None else "none",
        })

    # ----------------------------------------------------------------- the model
    @property
    def latent_dim(self) -> int:
        return int(self.hparams["latent_dim"])

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws z ~ p(z) = N(0, I), ``[n, Nz]``, in the model's dtype, on its device
        (drawn on the generator's device when one is given)."""
        device = self.device if generator is None else generator.device
        dtype = cast(torch.dtype, self.dtype)  # Lightning types it str | dtype; a module's is a torch.dtype
        return torch.randn((n, self.latent_dim), generator=generator, device=device, dtype=dtype).to(self.device)

    def decode(self, z: Tensor) -> tuple[Tensor, ...]:
        """Parameters of p(x|z): ``(logits,)`` for Bernoulli, ``(mean, logvar)`` for Gaussian."""
        return self.decoder(z)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) for ``z`` of shape ``[..., B, Nz]``; returns ``[..., B]``."""
        return self.decoder.log_prob(x, self.decoder(z))

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) + log p(z) for ``z`` of shape ``[..., B, Nz]``; returns ``[..., B]``."""
        return self.log_likelihood(x, z) + standard_normal_log_density(z)

    @property
    def max_log_likelihood(self) -> float:
        """An upper bound on log p(x|z), hence on log p(x), that the decoder guarantees: an
        estimate of log p(x) above it is impossible."""
        return self.decoder.max_log_likelihood()

    def decode_mean(self, z: Tensor) -> Tensor:
        """The mean of p(x|z) (what Figures 4 and 5 show) for ``z`` of shape ``[..., Nz]``."""
        return self.decoder.mean(self.decoder(z))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Means of p(x|z) at ``n`` draws z ~ p(z) (what Figure 5 shows); ``[n, D]``."""
        return self.decode_mean(self.prior_sample(n, generator))

    def noise_generator(self, stream: int, *key: int) -> torch.Generator:
        """A generator seeded by (noise seed, rank, stream, key): noise that is a pure function of
        the position in training, so a resumed or sharded run draws exactly the same numbers."""
        if self._noise is None or self._noise.device != self.device:
            self._noise = torch.Generator(device=self.device)
        return seeded_generator(int(self.noise_seed), self.global_rank, stream, *key, generator=self._noise)

    def training_noise(self) -> torch.Generator:
        """The generator of this training step's noise, keyed by the samples evaluated before the
        step: a position that a resume restores exactly, however often the run was stopped (it
        does not go through Lightning's epoch and batch counters). Call it before
        :meth:`count_samples`."""
        return self.noise_generator(TRAIN_STREAM, self.samples_evaluated)

    # ----------------------------------------------------------------- training
    def check_world_size(self, world_size: int) -> None:
        """``ValueError`` if this model cannot train on ``world_size`` processes (all of these
        can, except ``MCEM``)."""

    def count_samples(self, batch: Batch) -> None:
        """Add this step's datapoints, over all ranks, to ``samples_evaluated``; the callbacks'
        schedules read the step's interval (``samples_before_step``, ``samples_evaluated``]."""
        self.samples_before_step = self.samples_evaluated
        self.samples_evaluated += batch.x.shape[0] * self.trainer.world_size

    def check_finite(self, loss: Tensor) -> None:
        """Stop before a non-finite loss reaches backward and the update."""
        if not torch.isfinite(loss):
            raise NonFiniteError(non_finite_message(self, f"the loss is {loss.item()}"))

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """Adagrad (the paper's optimizer) with the N(0, I) parameter prior as weight decay 1/N,
        after ``adagrad_warmup_batches`` updates that only accumulate squared gradients."""
        hp = self.hparams
        decay = 1.0 / hp["train_size"] if hp["parameter_prior"] else 0.0
        if hp.get("prior_on", "all") == "weights":  # weight matrices decay, biases do not
            groups: Any = [{"params": [p for p in self.parameters() if p.ndim > 1]},
                           {"params": [p for p in self.parameters() if p.ndim <= 1], "weight_decay": 0.0}]
        else:
            groups = self.parameters()
        optimizer = torch.optim.Adagrad(
            groups, lr=hp["learning_rate"], eps=1e-8, weight_decay=decay,
            # One fused kernel instead of a Python loop over parameters: the same update up to
            # float rounding, several times faster on the CPU (docs/results.md, "Speed and memory").
            fused=self.device.type == "cpu",
        )
        warmup = LambdaLR(optimizer, AccumulateOnly(hp["adagrad_warmup_batches"]))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["samples_evaluated"] = self.samples_evaluated
        # Models with the same parameters (VAE, WakeSleep) exist: the class tells them apart.
        checkpoint["model_class"] = type(self).__name__

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.samples_evaluated = checkpoint.get("samples_evaluated", 0)


def check_positive(**values: float) -> None:
    """``ValueError`` naming the first argument that is not positive."""
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
