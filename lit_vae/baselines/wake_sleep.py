"""The wake-sleep algorithm (Hinton et al., 1995), the on-line baseline of Figures 2 and 3."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_vae.datamodules.batches import Batch
from lit_vae.estimators import diagonal_normal_log_density
from lit_vae.model import VAE


class WakeSleep(VAE):
    """Wake-sleep with the networks, data, optimizer and arguments of :class:`~lit_vae.VAE`.

    Each training step takes both phases on one minibatch of M datapoints:

    - wake: z ~ q_phi(z|x) for each datapoint, then a step on log p_theta(x, z) for the
      generative model (decoder) only;
    - sleep: M dreams z ~ p(z), x ~ p_theta(x|z) (binary pixels for the Bernoulli decoder,
      Gaussian draws for Eq. 12), then a step on log q_phi(z|x) for the recognition model
      (encoder) only.

    The two objectives touch disjoint parameters, so one Adagrad update (the paper's optimizer,
    step size and warm-up, as for AEVB) on their sum is both phases' updates. The wake sample
    gives the SGVB estimate of the lower bound L(theta, phi; x) (Eq. 7, or Eq. 6 with
    ``estimator="A"``): the running ``lower_bound/train``. ``lower_bound/test`` and the marginal
    likelihood are evaluated as for AEVB, so the curves overlay. Dreams are not training samples:
    ``samples_evaluated`` counts the M datapoints of each step.
    """

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        generator = self.training_noise()
        bound = self.wake_bound(batch.x, generator)
        loss = -bound.mean() - self.sleep_log_density(batch.x.shape[0], generator).mean()
        self.check_finite(loss)
        self.count_samples(batch)
        return {"loss": loss, "lower_bound": bound.detach()}

    def wake_bound(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The SGVB lower bound per datapoint at z ~ q(z|x), with q held fixed: its gradient is the
        wake phase's, grad_theta log p_theta(x, z), and reaches the decoder only."""
        with torch.no_grad():
            mu, logvar = self.encoder(x)
        return self._estimator(x, mu, logvar, self.noise(x, self.hparams["num_samples"], generator), self.log_likelihood)

    def sleep_log_density(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """log q_phi(z|x) at ``n`` dreams (z, x) ~ p(z) p_theta(x|z): the sleep phase's objective,
        whose gradient reaches the encoder only."""
        with torch.no_grad():
            z = self.prior_sample(n, generator)
            x = self.decoder.sample(self.decoder(z), generator)
        return diagonal_normal_log_density(z, *self.encoder(x))
