"""Monte Carlo EM (Appendix E), the baseline of Figure 3 that has no recognition model."""

from __future__ import annotations

from typing import Any, cast

import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor
from torch.optim.lr_scheduler import LRScheduler

from lit_vae.datamodules.batches import Batch
from lit_vae.generative import GenerativeModel, check_positive
from lit_vae.hmc import hmc


class MCEM(GenerativeModel):
    """Monte Carlo EM on the generative model of ``VAE`` (Appendix E).

    For each minibatch:

    - E-step: the posterior sample of each datapoint's z comes from its own HMC chain on
      p_theta(z|x), proportional to p_theta(x, z): one trajectory of ``num_leapfrog`` (10)
      leapfrog steps and a Metropolis test, continued from where the chain stopped when the
      datapoint was last visited (the chains and their step sizes are kept per training
      datapoint and saved in checkpoints, so they keep mixing across visits).
    - Step sizes: each chain's moves toward ``target_accept`` (0.9) by a Robbins-Monro step on
      its log, ``log eps += step_size_gain * (acceptance probability - target_accept)``, at
      every visit; it never freezes, since the posterior changes as theta learns.
    - M-step: ``updates_per_batch`` (5) Adagrad updates of theta on the minibatch mean of
      log p_theta(x, z) at that sample, with the N(0, I) parameter prior as weight decay.

    Annealing: Adagrad's own, a per-parameter step size ``learning_rate / sqrt(sum of squared
    gradients)`` (the paper: "Adagrad stepsizes with accompanying annealing schedule"), after
    ``adagrad_warmup_batches`` minibatches whose updates only accumulate squared gradients, as
    for AEVB. No other decay.

    Counting: ``samples_evaluated`` (the x axis) grows by M per minibatch, as for AEVB and
    wake-sleep; Lightning's ``global_step`` counts weight updates, ``updates_per_batch`` per
    minibatch (so ``--trainer.max_steps`` is minibatches x ``updates_per_batch``).

    There is no encoder, hence no lower bound: MCEM is evaluated with the HMC marginal
    likelihood (Appendix D) only. Its chains live in one process, so it runs on one device.

    Args:
        latent_dim, hidden_dim, train_size: as for every model, with Figure 3's values as defaults.
        num_leapfrog: leapfrog steps in each E-step trajectory.
        target_accept: acceptance rate the step sizes are adapted toward.
        initial_step_size: every chain's leapfrog step size before adaptation.
        step_size_gain: gain of the step-size adaptation.
        updates_per_batch: M-step updates of theta on each minibatch's posterior sample.
        **kwargs: the generative model's other arguments (:class:`~lit_vae.generative.GenerativeModel`).
    """

    chains: Tensor  # [N, Nz]: the state of each training datapoint's chain
    step_sizes: Tensor  # [N]: each chain's HMC step size

    def __init__(
        self,
        latent_dim: int = 3,
        hidden_dim: int = 100,
        train_size: int = 1_000,
        num_leapfrog: int = 10,
        target_accept: float = 0.9,
        initial_step_size: float = 0.1,
        step_size_gain: float = 0.05,
        updates_per_batch: int = 5,
        **kwargs: Any,
    ) -> None:
        check_positive(num_leapfrog=num_leapfrog, initial_step_size=initial_step_size,
                       step_size_gain=step_size_gain, updates_per_batch=updates_per_batch)
        if not 0 < target_accept < 1:
            raise ValueError(f"target_accept must be in (0, 1), got {target_accept}")
        super().__init__(latent_dim=latent_dim, hidden_dim=hidden_dim, train_size=train_size, **kwargs)
        self.automatic_optimization = False
        # Chains start from the prior, which the nearly constant initial decoder barely changes.
        self.register_buffer("chains", self.prior_sample(train_size))
        self.register_buffer("step_sizes", torch.full((train_size,), initial_step_size))

    def setup(self, stage: str) -> None:
        self.check_world_size(self.trainer.world_size)

    def check_world_size(self, world_size: int) -> None:
        if world_size > 1:
            raise ValueError(
                f"MCEM keeps an HMC chain per training datapoint in one process and cannot run on "
                f"{world_size} processes; run it with --trainer.devices 1 --trainer.num_nodes 1"
            )

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        z, accept = self.e_step(batch.x, batch.index, self.training_noise())
        optimizer, warmup = cast(LightningOptimizer, self.optimizers()), cast(LRScheduler, self.lr_schedulers())
        for _ in range(self.hparams["updates_per_batch"]):
            loss = -self.log_joint(batch.x, z).mean()
            self.check_finite(loss)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()
        warmup.step()  # per minibatch: the warm-up counts minibatches, as for AEVB
        self.count_samples(batch)
        return {"loss": loss.detach(), "accept_rate": accept.mean()}

    def e_step(self, x: Tensor, index: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Advance the chains of datapoints ``index`` (rows of the training split) by one HMC
        transition under p_theta(z|x) and adapt their step sizes; returns the new states
        ``[B, Nz]`` and each chain's acceptance probability ``[B]``."""
        result = hmc(lambda z: self.log_joint(x, z), self.chains[index], num_samples=1,
                     num_leapfrog=self.hparams["num_leapfrog"], step_size=self.step_sizes[index], generator=generator)
        z = result.samples[0]
        self.chains[index] = z
        self.step_sizes[index] *= torch.exp(self.hparams["step_size_gain"] * (result.accept_rate - self.hparams["target_accept"]))
        return z, result.accept_rate

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        """Nothing per batch: without a recognition model there is no lower bound to average;
        ``test`` reports the marginal-likelihood callback's HMC estimate (Appendix D)."""
