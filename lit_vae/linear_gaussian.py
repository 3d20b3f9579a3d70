"""A latent-variable model with an exact marginal likelihood and posterior: the reference on which
the estimators of log p(x) and the bounds are checked (the tests, and
``benchmarks/marginal_likelihood.py --accuracy``).

z ~ N(0, I_d),  x | z ~ N(W z + b, sigma^2 I_D),  so  x ~ N(b, W W^T + sigma^2 I_D)  and
z | x ~ N(S W^T (x - b) / sigma^2, S)  with  S = (I + W^T W / sigma^2)^-1.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal, Normal


class LinearGaussian:
    def __init__(self, latent_dim: int, data_dim: int = 8, noise_std: float = 0.5, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.seed = seed
        self.latent_dim = latent_dim
        self.W = torch.randn(data_dim, latent_dim, generator=g, dtype=torch.float64)
        self.b = torch.randn(data_dim, generator=g, dtype=torch.float64)
        self.sigma = noise_std

    @classmethod
    def random(cls, latent_dim: int, generator: torch.Generator) -> LinearGaussian:
        """A model drawn at random: data size latent_dim + 2 to 12, noise standard deviation 0.3
        to 1, weights from a drawn seed."""
        data_dim = int(torch.randint(latent_dim + 2, 13, (), generator=generator))
        noise_std = 0.3 + 0.7 * torch.rand((), generator=generator).item()
        return cls(latent_dim, data_dim=data_dim, noise_std=noise_std, seed=int(torch.randint(10_000, (), generator=generator)))

    def sample(self, n: int, seed: int = 1) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.latent_dim, generator=g, dtype=torch.float64)
        return z @ self.W.T + self.b + self.sigma * torch.randn(n, len(self.b), generator=g, dtype=torch.float64)

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, dtype=torch.float64)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        return Normal(z @ self.W.T + self.b, self.sigma).log_prob(x).sum(-1)

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        return self.log_likelihood(x, z) + Normal(0.0, 1.0).log_prob(z).sum(-1)

    def exact_log_marginal(self, x: Tensor) -> Tensor:
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(len(self.b), dtype=torch.float64)
        return MultivariateNormal(self.b, cov).log_prob(x)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        precision = torch.eye(self.latent_dim, dtype=torch.float64) + self.W.T @ self.W / self.sigma**2
        cov = torch.linalg.inv(precision)
        return (x - self.b) @ self.W @ cov / self.sigma**2, cov

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """A deliberately imperfect q(z|x): shifted mean, diagonal and inflated variances."""
        mean, cov = self.posterior(x)
        return mean + 0.3 * cov.diagonal().sqrt(), (2.0 * cov.diagonal()).log().expand_as(mean)
