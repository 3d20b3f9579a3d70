"""Estimators of the marginal likelihood log p(x) (Appendix D), for Figure 3.

- :func:`hmc_log_marginal`: the paper's estimator. Posterior samples from HMC, a density q(z)
  fitted to part of them, and log p(x) ~= -log mean_l q(z_l) / p(x, z_l) over the rest.
- :func:`importance_log_marginal`: importance sampling with q(z|x) as the proposal (the
  K-sample importance-weighted bound), an independent cross-check for any latent size.

Both work on a whole batch at once and are deterministic given a ``torch.Generator``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from lit_vae.appendix_d import DEFAULT_SETTINGS, MarginalLikelihoodSettings
from lit_vae.estimators import LOG_2PI, log_importance_weights
from lit_vae.hmc import hmc
from lit_vae.interfaces import RecognitionModel

#: ``log_joint(x, z) -> log p(x, z)`` for ``z`` of shape ``[..., B, Nz]`` (``VAE.log_joint``).
LogJoint = Callable[[Tensor, Tensor], Tensor]
#: ``prior_sample(n, generator) -> z``, ``[n, Nz]`` draws from p(z) (``GenerativeModel.prior_sample``).
PriorSample = Callable[[int, "torch.Generator | None"], Tensor]

#: Bandwidth multipliers tried around Scott's rule n^(-1/(D+4)).
_BANDWIDTHS = torch.logspace(math.log10(0.2), math.log10(3.0), 15).tolist()


def hmc_log_marginal(
    log_joint: LogJoint,
    x: Tensor,
    latent_dim: int,
    *,
    settings: MarginalLikelihoodSettings = DEFAULT_SETTINGS,
    init: Tensor | None = None,
    generator: torch.Generator | None = None,
    on_iteration: Callable[[], None] | None = None,
) -> Tensor:
    """log p(x) per datapoint by the estimator of Appendix D; returns ``[B]``. ``on_iteration``
    is called after each HMC iteration (``settings.burn_in + settings.num_samples`` of them).

    Choices the paper leaves open, made here (``settings`` holds the numbers, the paper's by
    default):

    - One HMC chain per datapoint, started at ``init`` (e.g. the encoder's mean; default z = 0),
      ``burn_in`` iterations that adapt each chain's step size toward ``target_accept`` and are
      discarded, then ``num_samples`` iterations of ``num_leapfrog`` leapfrog steps whose
      size varies by ``step_jitter`` around the adapted one.
    - Cross-fitting: a q(z) fitted to the first half of the samples scores the second half ("new
      values from the posterior"), one fitted to the second half scores the first, and
      log p(x) ~= -log (1/L sum_l q(z_l) / p(x, z_l)) over all L samples, each scored by the q
      fitted without it: twice the evaluated samples of the paper's one split, no new gradients.
    - q(z): a Gaussian kernel density estimate or a full-covariance Gaussian, whichever (and
      whichever bandwidth) has the highest held-out likelihood within the fitting half; only
      the Gaussian when samples are few (see :func:`fit_density`).

    The paper notes the estimator is only reliable for latent spaces below 5 dimensions;
    larger ones get a warning (use :func:`importance_log_marginal` there).
    """
    if latent_dim >= 5:
        warnings.warn(
            f"hmc_log_marginal with latent_dim={latent_dim}: the paper reports this estimator as "
            "unreliable from 5 latent dimensions on; importance_log_marginal is a check that scales.",
            stacklevel=2,
        )
    num_samples = settings.num_samples
    start = torch.zeros(x.shape[0], latent_dim, dtype=x.dtype, device=x.device) if init is None else init
    result = hmc(lambda z: log_joint(x, z), start, num_samples=num_samples, num_leapfrog=settings.num_leapfrog,
                 burn_in=settings.burn_in, target_accept=settings.target_accept, step_jitter=settings.step_jitter,
                 generator=generator, on_iteration=on_iteration)
    samples = result.samples.transpose(0, 1)  # [B, S, D]
    first, second = samples[:, : num_samples // 2], samples[:, num_samples // 2 :]
    log_q = torch.cat([fit_density(second)(first), fit_density(first)(second)], dim=1)  # [B, S]
    log_p = result.log_prob.transpose(0, 1)  # [B, S]
    return -(torch.logsumexp(log_q - log_p, dim=1) - math.log(num_samples))


@torch.no_grad()
def prior_search(
    log_joint: LogJoint, prior_sample: PriorSample, x: Tensor, num_draws: int = DEFAULT_SETTINGS.prior_draws, *,
    chunk_size: int = 25, generator: torch.Generator | None = None,
) -> Tensor:
    """Starting points for the HMC chains of a model without an encoder (``MCEM``): for each
    datapoint, the draw with the highest log p(x, z) among ``num_draws`` draws z ~ p(z) shared by
    all datapoints; ``[B, Nz]``.

    Chains started at z = 0 can spend the whole burn-in far from a narrow posterior, and read
    far too low on a model whose posteriors are narrow (docs/results.md, Figure 3).
    """
    z = prior_sample(num_draws, generator)[:, None, :]
    best = [z[log_joint(chunk, z.expand(-1, len(chunk), -1)).argmax(0), 0] for chunk in x.split(chunk_size)]
    return torch.cat(best)


def fit_density(samples: Tensor) -> Callable[[Tensor], Tensor]:
    """Fit q to ``samples`` (``[B, n, D]``, one set per datapoint); returns ``log_q(z)`` for
    ``z`` of shape ``[B, m, D]``.

    Candidates: a full-covariance Gaussian, and Gaussian KDEs whose kernel covariance is h^2 C
    (C the samples' covariance, h from 15 multiples, 0.2 to 3, of Scott's factor n^(-1/(D+4))).
    Each is fitted to the first half of ``samples`` and scored on the second (held-out
    likelihood; later samples of a chain are less correlated with the fit than neighbours are);
    the best, per datapoint, is refitted on all of them (a KDE's h rescaled by Scott's rule).
    With fewer than 10 (D + 1) samples only the Gaussian is used: a bandwidth chosen on a
    handful of held-out samples overfits them, and the estimate of log p(x) reads high
    (docs/results.md, "Figure 3: marginal likelihood").
    """
    n, d = samples.shape[1], samples.shape[2]
    if n < 10 * (d + 1):
        return _Whitened(samples).gaussian
    half = n // 2
    fit = _Whitened(samples[:, :half])
    multipliers = torch.tensor(_BANDWIDTHS, dtype=samples.dtype, device=samples.device)
    held_out = samples[:, half:]
    scores = torch.stack(
        [fit.gaussian(held_out).mean(1)] + [fit.kde(held_out, m * half ** (-1.0 / (d + 4))).mean(1) for m in multipliers]
    )  # [1 + H, B]
    choice = scores.argmax(0)  # 0: Gaussian, k > 0: KDE with multipliers[k - 1]
    full = _Whitened(samples)
    bandwidth = multipliers[(choice - 1).clamp(min=0)] * n ** (-1.0 / (d + 4))

    def log_q(z: Tensor) -> Tensor:
        return torch.where((choice == 0)[:, None], full.gaussian(z), full.kde(z, bandwidth))

    return log_q


class _Whitened:
    """Samples ``[B, n, D]`` whitened by their own mean and covariance, with the densities fitted to them."""

    def __init__(self, samples: Tensor) -> None:
        n, d = samples.shape[1], samples.shape[2]
        self.mean = samples.mean(1, keepdim=True)
        centred = samples - self.mean
        cov = centred.transpose(1, 2) @ centred / max(n - 1, 1)
        # Jitter, relative to the spread with an absolute floor (all samples equal: cov = 0).
        jitter = 1e-6 * cov.diagonal(dim1=1, dim2=2).mean(-1).clamp(min=1e-6)
        self.chol = torch.linalg.cholesky(cov + jitter[:, None, None] * torch.eye(d, dtype=cov.dtype, device=cov.device))
        self.log_det = self.chol.diagonal(dim1=1, dim2=2).log().sum(-1)[:, None]  # log |C|^(1/2)
        self.u = self.whiten(samples)

    def whiten(self, z: Tensor) -> Tensor:
        return torch.linalg.solve_triangular(self.chol, (z - self.mean).transpose(1, 2), upper=False).transpose(1, 2)

    def gaussian(self, z: Tensor) -> Tensor:
        d = z.shape[-1]
        return -0.5 * (self.whiten(z).pow(2).sum(-1) + d * LOG_2PI) - self.log_det

    def kde(self, z: Tensor, bandwidth: Tensor | float) -> Tensor:
        n, d = self.u.shape[1], self.u.shape[2]
        h = torch.as_tensor(bandwidth, dtype=z.dtype, device=z.device).reshape(-1, 1, 1)
        dist = torch.cdist(self.whiten(z), self.u).pow(2)  # [B, m, n]
        log_kernel = -0.5 * dist / h**2 - d * h.log() - 0.5 * d * LOG_2PI
        return torch.logsumexp(log_kernel, -1) - math.log(n) - self.log_det


@torch.no_grad()
def importance_log_marginal(
    model: RecognitionModel,
    x: Tensor,
    num_samples: int = DEFAULT_SETTINGS.importance_samples,
    *,
    chunk_size: int = 250,
    generator: torch.Generator | None = None,
) -> Tensor:
    """log p(x) ~= log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x), per datapoint; ``[B]``.

    Unbiased for p(x) and consistent for log p(x); a lower bound in expectation for any K (the
    importance-weighted bound). ``chunk_size`` samples are scored at a time to bound memory.
    """
    mu, logvar = model.encode(x)
    total = torch.full((x.shape[0],), -math.inf, dtype=x.dtype, device=x.device)
    for start in range(0, num_samples, chunk_size):
        k = min(chunk_size, num_samples - start)
        eps = torch.randn((k, *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
        total = torch.logaddexp(total, torch.logsumexp(log_importance_weights(x, mu, logvar, eps, model.log_likelihood), 0))
    return total - math.log(num_samples)
