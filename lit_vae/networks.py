"""The MLP encoder and decoders of Section 3 and Appendix C.

Each network has one tanh hidden layer in the paper (more on request: ``hidden_dims``, as in the
models of the importance-weighted literature). The encoder gives the parameters of the Gaussian
q(z|x); a decoder gives the parameters of p(x|z) and scores data under them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_vae.estimators import diagonal_normal_log_density


def hidden_layers(input_dim: int, hidden_dims: int | Sequence[int]) -> tuple[nn.Linear, nn.ModuleList, int]:
    """An MLP's tanh hidden layers of sizes ``hidden_dims`` (an int: one layer, the paper's): the
    first layer, the others (none in the paper) and the last one's width. A one-layer network's
    parameters keep the names ``hidden.weight`` and ``hidden.bias``, so its checkpoints stay readable."""
    sizes = [input_dim, *([hidden_dims] if isinstance(hidden_dims, int) else hidden_dims)]
    if len(sizes) < 2:
        raise ValueError("an MLP needs at least one hidden layer; got hidden_dims []")
    return nn.Linear(sizes[0], sizes[1]), nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes[1:])), sizes[-1]


def tanh_hidden(x: Tensor, first: nn.Linear, more: nn.ModuleList) -> Tensor:
    """h = tanh(W_k ... tanh(W_1 x + b_1) ... + b_k) through :func:`hidden_layers`' layers."""
    h = torch.tanh(first(x))
    for layer in more:
        h = torch.tanh(layer(h))
    return h


class GaussianMLPEncoder(nn.Module):
    """q(z|x) = N(z; mu, diag(sigma^2)) with h = tanh(W3 x + b3), mu = W4 h + b4,
    log sigma^2 = W5 h + b5 (Appendix C.2, the encoder role).

    ``logvar_scale`` s gives log sigma^2 = s (W5 h + b5): with Adagrad, whose steps do not
    depend on a gradient's scale, s < 1 slows the log-variance's learning by s (a candidate of
    the paper-era code's recognition model, off at s = 1). ``hidden_dims``: the paper's one
    hidden layer (an int), or several (a list, input side first; :func:`hidden_layers`).
    """

    def __init__(self, input_dim: int, hidden_dims: int | Sequence[int], latent_dim: int, logvar_scale: float = 1.0) -> None:
        super().__init__()
        self.hidden, self.more_hidden, width = hidden_layers(input_dim, hidden_dims)
        self.mu = nn.Linear(width, latent_dim)
        self.logvar = nn.Linear(width, latent_dim)
        self.logvar_scale = logvar_scale

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = tanh_hidden(x, self.hidden, self.more_hidden)
        logvar = self.logvar(h)
        return self.mu(h), logvar if self.logvar_scale == 1.0 else self.logvar_scale * logvar


class BernoulliMLPDecoder(nn.Module):
    """p(x|z) = prod_i y_i^x_i (1 - y_i)^(1 - x_i), y = sigmoid(W2 tanh(W1 z + b1) + b2) (Eq. 11).

    ``forward`` returns ``(logits,)``; the probabilities y are ``sigmoid(logits)``. Grey levels
    in [0, 1] are valid targets: the log-likelihood is then the (negative) cross-entropy,
    as in the paper's MNIST experiments. ``hidden_dims``: as for the encoder, latent side first.
    """

    def __init__(self, latent_dim: int, hidden_dims: int | Sequence[int], output_dim: int) -> None:
        super().__init__()
        self.hidden, self.more_hidden, width = hidden_layers(latent_dim, hidden_dims)
        self.logits = nn.Linear(width, output_dim)

    def forward(self, z: Tensor) -> tuple[Tensor]:
        return (self.logits(tanh_hidden(z, self.hidden, self.more_hidden)),)

    def max_log_likelihood(self) -> float:
        """An upper bound on log p(x|z) for any z and x in [0, 1]^D: 0, each pixel's term being a
        negative cross-entropy. So log p(x) <= 0 too."""
        return 0.0

    @staticmethod
    def log_prob(x: Tensor, params: tuple[Tensor]) -> Tensor:
        """log p(x|z) summed over pixels (Eq. 11)."""
        (logits,) = params
        return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    @staticmethod
    def mean(params: tuple[Tensor]) -> Tensor:
        """E[x|z] = y."""
        return torch.sigmoid(params[0])

    @staticmethod
    def sample(params: tuple[Tensor], generator: torch.Generator | None = None) -> Tensor:
        """x ~ p(x|z): binary pixels, x_i ~ Bernoulli(y_i)."""
        return torch.bernoulli(torch.sigmoid(params[0]), generator=generator)


#: The range of the Gaussian decoder's log-variances, [log(1/256^2), log 1] = [-11.09, 0]
#: (see :class:`GaussianMLPDecoder`).
LOGVAR_RANGE = (2 * math.log(1 / 256), 0.0)


def soft_clamp(x: Tensor, low: float, high: float) -> Tensor:
    """low + softplus(x - low) - softplus(x - high), for low < high: about x well inside (low, high)
    (within e^-d at a distance d from both ends), about low or high far outside it. Its gradient
    sigmoid(x - low) - sigmoid(x - high) is positive, falling off like e^-d outside the range; a
    hard clamp's is zero there, so a unit pushed outside can stay there for good."""
    return low + F.softplus(x - low) - F.softplus(x - high)


class GaussianMLPDecoder(nn.Module):
    """p(x|z) = N(x; mu, diag(sigma^2)) with h = tanh(W3 z + b3), mu = sigmoid(W4 h + b4),
    log sigma^2 = W5 h + b5 (Eq. 12; the mean is squashed to (0, 1), as for Frey Face).

    The log-variance W5 h + b5 passes through :func:`soft_clamp` into ``logvar_range``, by default
    :data:`LOGVAR_RANGE`, for numerical safety (``None``: unbounded, as the paper-era code). Data
    in [0, 1] around a mean in (0, 1) never has a squared error above 1, so a variance above 1
    never raises the likelihood; and a standard deviation below one grey level (1/256) only fits
    the 8-bit quantisation of the data, on which a continuous density grows without bound as
    sigma -> 0. Beyond these values the term
    (x - mu)^2 / sigma^2 makes gradients so large that they swamp Adagrad's accumulated squares
    and a run crawls for millions of samples (docs/results.md measures it at step size 0.1).
    At initialisation (W5 h + b5 near 0) the clamp puts the log-variance at about -log 2
    (variance 1/2), not 0.

    ``forward`` returns ``(mean, logvar)``, both per pixel. ``hidden_dims``: as for the
    encoder, latent side first.
    """

    def __init__(self, latent_dim: int, hidden_dims: int | Sequence[int], output_dim: int,
                 logvar_range: tuple[float, float] | None = LOGVAR_RANGE) -> None:
        super().__init__()
        if logvar_range is not None and not logvar_range[0] < logvar_range[1]:
            raise ValueError(f"logvar_range must be (low, high) with low < high, got {logvar_range}")
        self.logvar_range = logvar_range
        self.hidden, self.more_hidden, width = hidden_layers(latent_dim, hidden_dims)
        self.mu = nn.Linear(width, output_dim)
        self.logvar = nn.Linear(width, output_dim)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        h = tanh_hidden(z, self.hidden, self.more_hidden)
        logvar = self.logvar(h)
        return torch.sigmoid(self.mu(h)), logvar if self.logvar_range is None else soft_clamp(logvar, *self.logvar_range)

    def max_log_likelihood(self) -> float:
        """An upper bound on log p(x|z) for any z and x: each pixel's density is at most that of
        x = mu at the smallest variance, -log(2 pi) / 2 - low / 2. So log p(x) is bounded too
        (unbounded without a ``logvar_range``: then ``inf``)."""
        if self.logvar_range is None:
            return math.inf
        return self.mu.out_features * (-0.5 * math.log(2 * math.pi) - 0.5 * self.logvar_range[0])

    @staticmethod
    def log_prob(x: Tensor, params: tuple[Tensor, Tensor]) -> Tensor:
        """log N(x; mu, diag(sigma^2)) summed over pixels (Eq. 12)."""
        return diagonal_normal_log_density(x, *params)

    @staticmethod
    def mean(params: tuple[Tensor, Tensor]) -> Tensor:
        """E[x|z] = mu."""
        return params[0]

    @staticmethod
    def sample(params: tuple[Tensor, Tensor], generator: torch.Generator | None = None) -> Tensor:
        """x ~ p(x|z) = N(mu, diag(sigma^2))."""
        mean, logvar = params
        return mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)


DECODERS: dict[str, type[BernoulliMLPDecoder] | type[GaussianMLPDecoder]] = {
    "bernoulli": BernoulliMLPDecoder, "gaussian": GaussianMLPDecoder}


def init_normal_(module: nn.Module, std: float) -> None:
    """Draw every parameter (weights and biases) from N(0, std^2), as in the paper's code."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
