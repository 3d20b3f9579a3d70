"""Batched Hybrid (Hamiltonian) Monte Carlo in plain torch: the sampler of Appendix D.

Many independent chains (e.g. one or more per datapoint) run together as one tensor: the
state ``z`` has shape ``[*chains, D]`` and ``log_prob(z)`` returns ``[*chains]``. Gradients come
from autograd; each chain has its own step size, adapted during burn-in only (dual averaging,
Hoffman & Gelman 2014, Algorithm 5) toward a target acceptance rate (0.9 in the paper). Each
iteration can draw its step size around the adapted one (Neal 2011, "MCMC using Hamiltonian
dynamics", Section 5.4.2.2), which breaks the near-periodic trajectories that a fixed number of
leapfrog steps of a fixed size gives on near-Gaussian targets.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

LogProb = Callable[[Tensor], Tensor]


@dataclass
class HMCResult:
    """``samples``: ``[num_samples, *chains, D]``; ``log_prob``: ``log_prob`` at each of them,
    ``[num_samples, *chains]`` (computed by the chains, so no second pass is needed);
    ``accept_rate``: mean acceptance probability of each chain over the sampling phase;
    ``step_size``: each chain's step size after burn-in."""

    samples: Tensor
    log_prob: Tensor
    accept_rate: Tensor
    step_size: Tensor


def value_and_grad(log_prob: LogProb, z: Tensor) -> tuple[Tensor, Tensor]:
    """``log_prob(z)`` and its gradient with respect to ``z`` (never to any parameter)."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        value = log_prob(z)
        (grad,) = torch.autograd.grad(value.sum(), z)
    return value.detach(), grad


def leapfrog(
    log_prob: LogProb, z: Tensor, r: Tensor, grad: Tensor, step_size: Tensor, num_steps: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``num_steps`` leapfrog steps of the Hamiltonian -log_prob(z) + |r|^2 / 2.

    ``grad`` is the gradient at ``z`` (reused from the previous trajectory), ``step_size`` is
    ``[*chains, 1]``. Returns the end point's (z, r, log_prob, grad).
    """
    r = r + 0.5 * step_size * grad
    for i in range(num_steps):
        z = z + step_size * r
        value, grad = value_and_grad(log_prob, z)
        if i < num_steps - 1:
            r = r + step_size * grad
    return z, r + 0.5 * step_size * grad, value, grad


class DualAveraging:
    """Per-chain step-size adaptation toward ``target`` acceptance (Hoffman & Gelman, 2014)."""

    def __init__(self, step_size: Tensor, target: float, gamma: float = 0.05, t0: float = 10.0, kappa: float = 0.75) -> None:
        self.mu = torch.log(10 * step_size)
        self.target, self.gamma, self.t0, self.kappa = target, gamma, t0, kappa
        self.h_bar = torch.zeros_like(step_size)
        self.log_step_bar = torch.zeros_like(step_size)
        self.t = 0

    def update(self, accept_prob: Tensor) -> Tensor:
        """Fold in one iteration's acceptance probabilities; returns the next step sizes."""
        self.t += 1
        w = 1.0 / (self.t + self.t0)
        self.h_bar = (1 - w) * self.h_bar + w * (self.target - accept_prob)
        log_step = self.mu - math.sqrt(self.t) / self.gamma * self.h_bar
        eta = self.t ** -self.kappa
        self.log_step_bar = eta * log_step + (1 - eta) * self.log_step_bar
        return log_step.exp()

    def final(self) -> Tensor:
        """The averaged step size, used after burn-in."""
        return self.log_step_bar.exp()


def hmc(
    log_prob: LogProb,
    init: Tensor,
    *,
    num_samples: int,
    num_leapfrog: int = 4,
    burn_in: int = 0,
    step_size: float | Tensor = 0.1,
    target_accept: float = 0.9,
    step_jitter: float = 0.0,
    generator: torch.Generator | None = None,
    on_iteration: Callable[[], None] | None = None,
) -> HMCResult:
    """Run HMC chains from ``init`` (``[*chains, D]``) and return ``num_samples`` states of each.

    The first ``burn_in`` iterations adapt each chain's step size and are discarded; with
    ``burn_in=0`` the given step sizes are used as they are (e.g. persisted between calls).
    With ``step_jitter`` j each iteration's step size is the chain's times a uniform draw from
    [1 - j, 1 + j].
    ``on_iteration`` is called after each of the ``burn_in + num_samples`` iterations (progress).
    """
    if not 0 <= step_jitter < 1:
        raise ValueError(f"step_jitter must be in [0, 1), got {step_jitter}")
    chains = init.shape[:-1]
    step = torch.as_tensor(step_size, dtype=init.dtype, device=init.device).expand(chains).clone()
    adaptation = DualAveraging(step, target_accept) if burn_in > 0 else None
    z = init.detach()
    value, grad = value_and_grad(log_prob, z)
    samples, log_probs, accepted = [], [], torch.zeros(chains, dtype=init.dtype, device=init.device)
    for iteration in range(burn_in + num_samples):
        r = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        jittered = step
        if step_jitter > 0:
            jittered = step * (1 + step_jitter * (2 * torch.rand(chains, generator=generator, dtype=z.dtype, device=z.device) - 1))
        z_new, r_new, value_new, grad_new = leapfrog(log_prob, z, r, grad, jittered[..., None], num_leapfrog)
        log_ratio = (value_new - 0.5 * r_new.pow(2).sum(-1)) - (value - 0.5 * r.pow(2).sum(-1))
        accept_prob = torch.nan_to_num(log_ratio, nan=-math.inf).clamp(max=0.0).exp()
        accept = torch.rand(chains, generator=generator, dtype=z.dtype, device=z.device) < accept_prob
        z = torch.where(accept[..., None], z_new, z)
        value = torch.where(accept, value_new, value)
        grad = torch.where(accept[..., None], grad_new, grad)
        if iteration < burn_in and adaptation is not None:  # adaptation exists exactly when burn_in > 0
            step = adaptation.update(accept_prob) if iteration < burn_in - 1 else adaptation.final()
        else:
            samples.append(z)
            log_probs.append(value)
            accepted += accept_prob
        if on_iteration is not None:
            on_iteration()
    return HMCResult(torch.stack(samples), torch.stack(log_probs), accepted / max(num_samples, 1), step)
