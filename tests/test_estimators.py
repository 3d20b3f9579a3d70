"""The SGVB estimators against closed forms and independent Monte Carlo estimates."""

import math

import torch
from torch.distributions import Normal, kl_divergence

from lit_vae import VAE
from lit_vae.estimators import (
    active_units,
    iwae_bound,
    kl_per_dimension,
    kl_to_standard_normal,
    reparameterize,
    sgvb_a,
    sgvb_b,
    standard_normal_log_density,
)
from lit_vae.linear_gaussian import LinearGaussian
from lit_vae.networks import BernoulliMLPDecoder, init_normal_


def _posterior(batch=4, latent=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, latent, generator=g), torch.randn(batch, latent, generator=g) * 0.5


class TestKLToStandardNormal:
    def test_equals_torch_distributions(self):
        mu, logvar = _posterior()
        expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
        torch.testing.assert_close(kl_to_standard_normal(mu, logvar), expected)

    def test_equals_monte_carlo_estimate(self):
        mu, logvar = _posterior()
        q = Normal(mu, (0.5 * logvar).exp())
        z = mu + q.stddev * torch.randn((200_000, *mu.shape), generator=torch.Generator().manual_seed(1))
        samples = q.log_prob(z).sum(-1) - standard_normal_log_density(z)
        stderr = samples.std(0) / math.sqrt(len(samples))
        assert ((samples.mean(0) - kl_to_standard_normal(mu, logvar)).abs() < 4 * stderr).all()

    def test_zero_at_the_prior(self):
        assert kl_to_standard_normal(torch.zeros(2, 5), torch.zeros(2, 5)).abs().max() == 0

    def test_per_dimension_equals_torch_distributions(self):
        mu, logvar = _posterior()
        expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0))
        torch.testing.assert_close(kl_per_dimension(mu, logvar), expected)


class TestEstimatorsAAndB:
    def setup_method(self):
        torch.manual_seed(0)
        self.decoder = BernoulliMLPDecoder(latent_dim=3, hidden_dims=16, output_dim=10)
        init_normal_(self.decoder, 0.5)
        self.x = torch.rand(5, 10)
        self.mu, self.logvar = _posterior(batch=5)

    def log_likelihood(self, x, z):
        return self.decoder.log_prob(x, self.decoder(z))

    def test_agree_in_expectation(self):
        """E[L^A] = E[L^B] = L: both are unbiased for the same bound (Eqs. 6, 7)."""
        eps = torch.randn(1, 50_000, 5, 3)  # L = 1, with a batch of 50,000 independent estimates
        with torch.no_grad():
            a = sgvb_a(self.x, self.mu, self.logvar, eps, self.log_likelihood)
            b = sgvb_b(self.x, self.mu, self.logvar, eps, self.log_likelihood)
        stderr = ((a.var(0) + b.var(0)) / len(a)).sqrt()
        assert ((a.mean(0) - b.mean(0)).abs() < 4 * stderr).all()
        # B replaces a sampled KL by its closed form: it has the lower variance.
        assert (b.var(0) < a.var(0)).all()

    def test_average_over_samples(self):
        """With L samples the estimate is the mean of the L single-sample estimates."""
        eps = torch.randn(7, 5, 3)
        for estimator in (sgvb_a, sgvb_b):
            joint = estimator(self.x, self.mu, self.logvar, eps, self.log_likelihood)
            single = torch.stack([estimator(self.x, self.mu, self.logvar, e[None], self.log_likelihood) for e in eps])
            torch.testing.assert_close(joint, single.mean(0))

    def test_sgvb_a_equals_its_definition(self):
        eps = torch.randn(1, 5, 3)
        z = reparameterize(self.mu, self.logvar, eps)
        q = Normal(self.mu, (0.5 * self.logvar).exp())
        expected = self.log_likelihood(self.x, z) + Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
        torch.testing.assert_close(sgvb_a(self.x, self.mu, self.logvar, eps, self.log_likelihood), expected[0])


class TestReparameterisedGradient:
    def test_unbiased_on_a_known_gradient(self):
        """E_q[sin z] = sin(mu) exp(-sigma^2/2); its gradient is known in closed form."""
        mu = torch.tensor([0.3, -1.2, 2.0], requires_grad=True)
        logvar = torch.tensor([-1.0, 0.0, 0.5], requires_grad=True)
        generator = torch.Generator().manual_seed(1)
        grads_mu, grads_logvar = [], []
        for _ in range(200):  # independent estimates from 1,000 samples each: a mean and a spread
            eps = torch.randn(1000, 3, generator=generator)
            g_mu, g_lv = torch.autograd.grad(torch.sin(reparameterize(mu, logvar, eps)).mean(0).sum(), (mu, logvar))
            grads_mu.append(g_mu)
            grads_logvar.append(g_lv)
        grads_mu, grads_logvar = torch.stack(grads_mu), torch.stack(grads_logvar)
        var = logvar.detach().exp()
        damp = torch.exp(-var / 2)
        exact_mu = torch.cos(mu.detach()) * damp
        exact_logvar = -0.5 * var * torch.sin(mu.detach()) * damp
        for grads, exact in ((grads_mu, exact_mu), (grads_logvar, exact_logvar)):
            stderr = grads.std(0) / math.sqrt(len(grads))
            assert ((grads.mean(0) - exact).abs() < 4 * stderr + 1e-6).all()


class TestActiveUnits:
    def test_a_linear_encoder_has_as_many_as_its_informative_columns(self):
        """mu = x W with x ~ N(0, I_10): Var(mu_u) = ||W[:, u]||^2, by hand 1 for the three
        columns of the identity and 10 x (0.02 / sqrt 10)^2 = 0.0004 for the other three."""
        torch.manual_seed(0)
        weights = torch.zeros(10, 6)
        weights[:3, :3] = torch.eye(3)
        weights[:, 3:] = 0.02 / math.sqrt(10)
        assert active_units(torch.randn(5000, 10) @ weights) == 3

    def test_a_freshly_initialised_model_has_none(self):
        torch.manual_seed(0)
        model = VAE(latent_dim=20, hidden_dim=500, input_dim=784)
        assert active_units(model.encode(torch.rand(1000, 784))[0].detach()) == 0



class TestIWAE:
    """The importance-weighted bound (Burda et al. 2015) on a linear-Gaussian model, whose log p(x)
    and ELBO are known in closed form, with the model's deliberately imperfect q(z|x)."""

    def setup_method(self):
        self.model = LinearGaussian(latent_dim=2, data_dim=6, seed=3)
        self.x = self.model.sample(5, seed=4)
        self.mu, self.logvar = self.model.encode(self.x)
        self.log_likelihood = self.model.log_likelihood

    def bound(self, k, draws, seed=0):
        """E[L_k] per datapoint, the mean of ``draws`` independent k-sample bounds."""
        eps = torch.randn((draws, k, *self.mu.shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return torch.stack([iwae_bound(self.x, self.mu, self.logvar, e, self.log_likelihood) for e in eps]).mean(0)

    def test_one_sample_is_estimator_a_on_the_same_noise(self):
        eps = torch.randn((1, *self.mu.shape), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        torch.testing.assert_close(iwae_bound(self.x, self.mu, self.logvar, eps, self.log_likelihood),
                                   sgvb_a(self.x, self.mu, self.logvar, eps, self.log_likelihood))

    def test_rises_with_k_towards_the_exact_log_marginal(self):
        exact = self.model.exact_log_marginal(self.x)
        bounds = {k: self.bound(k, draws=max(20, 4000 // k)) for k in (1, 5, 50, 2000)}
        gaps = {k: (exact - b).mean().item() for k, b in bounds.items()}
        assert gaps[1] > gaps[5] > gaps[50] > 0  # a bound for each k, tighter with k
        assert gaps[1] > 0.2  # q is imperfect: the ELBO is well below log p(x)
        assert abs(gaps[2000]) < 0.02
        # k = 1: the ELBO, in closed form for a linear-Gaussian model and a diagonal Gaussian q.
        W, b, s2, var = self.model.W, self.model.b, self.model.sigma**2, self.logvar.exp()
        residual = (self.x - self.mu @ W.T - b).pow(2).sum(-1) + (var @ W.pow(2).T).sum(-1)
        expected_log_likelihood = -0.5 * len(b) * math.log(2 * math.pi * s2) - residual / (2 * s2)
        elbo = expected_log_likelihood - kl_divergence(Normal(self.mu, var.sqrt()), Normal(0.0, 1.0)).sum(-1)
        torch.testing.assert_close(bounds[1], elbo, atol=0.1, rtol=0)
