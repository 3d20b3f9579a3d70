"""The SGVB estimators of the variational lower bound (Section 2.3 of Kingma & Welling, 2013).

Every function here is a pure tensor kernel: noise ``eps`` is drawn by the caller, so the same
code serves training, evaluation with fixed noise, and the marginal-likelihood estimators.
Shapes: ``x`` is ``[B, D]``, ``mu`` and ``logvar`` are ``[B, Nz]``, ``eps`` is ``[L, B, Nz]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

#: ``log_likelihood(x, z) -> log p(x|z)`` for ``z`` of shape ``[..., B, Nz]``, summed over pixels.
LogLikelihood = Callable[[Tensor, Tensor], Tensor]

#: log(2 pi), the normalising constant of every Gaussian density here.
LOG_2PI = math.log(2.0 * math.pi)


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): the reparameterisation of Section 2.4 (Eq. 10)."""
    return mu + torch.exp(0.5 * logvar) * eps


def standard_normal_log_density(z: Tensor) -> Tensor:
    """log N(z; 0, I), summed over the last dimension: the prior p(z) of Section 3."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def diagonal_normal_log_density(x: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log N(x; mean, diag(exp(logvar))), summed over the last dimension: the density of the
    Gaussian decoder (Eq. 12) and of q(z|x) at a given z (Appendix C.2)."""
    return -0.5 * (LOG_2PI + logvar + (x - mean).pow(2) * torch.exp(-logvar)).sum(-1)


def reparameterized_log_density(eps: Tensor, logvar: Tensor) -> Tensor:
    """log q(z|x) at z = mu + sigma * eps, summed over the last dimension:
    sum_j -1/2 (log 2 pi + log sigma_j^2 + eps_j^2) (q of Eq. 9, evaluated through eps)."""
    return -0.5 * (eps.pow(2) + logvar + LOG_2PI).sum(-1)


def kl_per_dimension(mu: Tensor, logvar: Tensor) -> Tensor:
    """D_KL(N(mu_j, sigma_j^2) || N(0, 1)) of each latent dimension j, ``[..., Nz]``, in closed
    form (Appendix B): -1/2 (1 + log sigma_j^2 - mu_j^2 - sigma_j^2)."""
    return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp())


def kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """D_KL(N(mu, diag(exp(logvar))) || N(0, I)) per datapoint, in closed form (Appendix B):
    the sum of :func:`kl_per_dimension` over the latent dimensions.

    -D_KL = 1/2 * sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2).
    """
    return kl_per_dimension(mu, logvar).sum(-1)


def log_importance_weights(x: Tensor, mu: Tensor, logvar: Tensor, eps: Tensor, log_likelihood: LogLikelihood) -> Tensor:
    """log p(x, z_l) - log q(z_l|x) at z_l = mu + sigma * eps_l, ``[L, B]``: the terms of Eq. 6,
    and the log importance weights of the estimators of log p(x) with q(z|x) as proposal."""
    z = reparameterize(mu, logvar, eps)
    return log_likelihood(x, z) + standard_normal_log_density(z) - reparameterized_log_density(eps, logvar)


def sgvb_a(x: Tensor, mu: Tensor, logvar: Tensor, eps: Tensor, log_likelihood: LogLikelihood) -> Tensor:
    """Generic SGVB estimator L^A (Eq. 6), per datapoint.

    L^A = 1/L sum_l [log p(x, z_l) - log q(z_l|x)],  z_l = mu + sigma * eps_l.
    """
    return log_importance_weights(x, mu, logvar, eps, log_likelihood).mean(0)


def iwae_bound(x: Tensor, mu: Tensor, logvar: Tensor, eps: Tensor, log_likelihood: LogLikelihood) -> Tensor:
    """The importance-weighted bound L_k of Burda, Grosse & Salakhutdinov (2015, Eq. 8) per
    datapoint, with k = L samples of z per datapoint:

    L_k = log 1/k sum_l p(x, z_l) / q(z_l|x),  z_l = mu + sigma * eps_l,

    a log-mean-exp of the terms of Eq. 6, computed stably. L_1 is L^A on the same noise;
    E[L_k] rises with k towards log p(x).
    """
    return log_mean_exp(log_importance_weights(x, mu, logvar, eps, log_likelihood))


def log_mean_exp(log_weights: Tensor) -> Tensor:
    """log 1/k sum_l exp(w_l) over the first dimension (k = its size), computed stably: L_k of
    the log importance weights ``[k, B]`` (:func:`iwae_bound`)."""
    return torch.logsumexp(log_weights, 0) - math.log(log_weights.shape[0])


def sgvb_b(x: Tensor, mu: Tensor, logvar: Tensor, eps: Tensor, log_likelihood: LogLikelihood) -> Tensor:
    """SGVB estimator L^B (Eq. 7) per datapoint, with its KL term in the closed form of Eq. 10
    (Appendix B) for a Gaussian q(z|x) and the prior N(0, I):

    L^B = -D_KL(q(z|x) || p(z)) + 1/L sum_l log p(x|z_l),  z_l = mu + sigma * eps_l,
    -D_KL = 1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2).
    """
    z = reparameterize(mu, logvar, eps)
    return log_likelihood(x, z).mean(0) - kl_to_standard_normal(mu, logvar)


ESTIMATORS: dict[str, Callable[[Tensor, Tensor, Tensor, Tensor, LogLikelihood], Tensor]] = {
    "A": sgvb_a,
    "B": sgvb_b,
    "iwae": iwae_bound,
}


#: Burda et al. (2015): a latent dimension is active when the variance of its posterior mean over the data exceeds this.
ACTIVE_UNIT_THRESHOLD = 0.01


def latent_activity(means: Tensor) -> Tensor:
    """Cov_x(E_q[z_u|x]) of each latent dimension u, ``[Nz]``, from the posterior means ``[N, Nz]``
    of N points: how much the dimension's code moves with x (Burda, Grosse & Salakhutdinov 2015,
    Section 5.2). A dimension whose mean does not move carries no information about x (its KL
    term then goes to 0 as q(z_u|x) matches the prior)."""
    return means.double().var(dim=0)


def active_units(means: Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """The number of active latent dimensions: those whose :func:`latent_activity` exceeds ``threshold``."""
    return int((latent_activity(means) > threshold).sum())
