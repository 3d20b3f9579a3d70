"""HMC and the marginal-likelihood estimators of Appendix D against closed forms."""

import warnings

import pytest
import torch

from lit_vae.appendix_d import MarginalLikelihoodSettings
from lit_vae.hmc import hmc
from lit_vae.linear_gaussian import LinearGaussian
from lit_vae.marginal_likelihood import fit_density, hmc_log_marginal, importance_log_marginal, prior_search


class TestHMC:
    mean = torch.tensor([1.0, -2.0], dtype=torch.float64)
    cov = torch.tensor([[1.0, 0.8], [0.8, 2.0]], dtype=torch.float64)

    def log_prob(self, z):
        return torch.distributions.MultivariateNormal(self.mean, self.cov).log_prob(z)

    def test_leaves_a_gaussian_invariant(self):
        """Chains started exactly in the target stay in it: the moments of all samples match."""
        g = torch.Generator().manual_seed(0)
        init = torch.distributions.MultivariateNormal(self.mean, self.cov).sample((2000,))
        result = hmc(self.log_prob, init, num_samples=20, num_leapfrog=4, step_size=0.4, generator=g)
        samples = result.samples.reshape(-1, 2)
        torch.testing.assert_close(samples.mean(0), self.mean, atol=0.05, rtol=0)
        torch.testing.assert_close(torch.cov(samples.T), self.cov, atol=0.1, rtol=0)

    @pytest.mark.parametrize("initial_step", [0.05, 2.0])  # from too small and from too large
    def test_adaptation_reaches_the_paper_acceptance_rate(self, initial_step):
        g = torch.Generator().manual_seed(1)
        init = torch.zeros(500, 2, dtype=torch.float64)
        result = hmc(self.log_prob, init, num_samples=100, burn_in=200, step_size=initial_step, target_accept=0.9, generator=g)
        assert abs(result.accept_rate.mean().item() - 0.9) < 0.04
        assert result.step_size.shape == (500,)

    def test_lower_target_larger_steps(self):
        g = torch.Generator().manual_seed(1)
        init = torch.zeros(500, 2, dtype=torch.float64)
        low = hmc(self.log_prob, init, num_samples=50, burn_in=200, target_accept=0.6, generator=g)
        high = hmc(self.log_prob, init, num_samples=50, burn_in=200, target_accept=0.9, generator=g)
        assert high.step_size.mean() < low.step_size.mean()
        assert high.accept_rate.mean() > low.accept_rate.mean()

    def test_step_jitter_breaks_the_half_period_trajectory(self):
        """On N(0, I), 4 leapfrog steps of pi/4 carry a chain almost exactly to -z: the squared
        radius of consecutive samples is then the same (correlation near 1). Jittered steps
        end anywhere along the orbit, so consecutive radii decorrelate."""
        target = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
        init = torch.randn(500, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        for jitter, check in ((0.0, lambda c: c > 0.9), (0.5, lambda c: c < 0.6)):
            samples = hmc(target.log_prob, init, num_samples=40, step_size=torch.pi / 4, step_jitter=jitter,
                          generator=torch.Generator().manual_seed(2)).samples
            radius = samples.pow(2).sum(-1)  # [S, chains]
            lag1 = torch.corrcoef(torch.stack([radius[:-1].flatten(), radius[1:].flatten()]))[0, 1].item()
            assert check(lag1), (jitter, lag1)

    def test_step_jitter_must_be_below_one(self):
        with pytest.raises(ValueError, match="step_jitter"):
            hmc(self.log_prob, torch.zeros(1, 2, dtype=torch.float64), num_samples=1, step_jitter=1.0)

    def test_deterministic_given_a_generator(self):
        init = torch.zeros(10, 2, dtype=torch.float64)
        a = hmc(self.log_prob, init, num_samples=5, burn_in=5, generator=torch.Generator().manual_seed(3)).samples
        b = hmc(self.log_prob, init, num_samples=5, burn_in=5, generator=torch.Generator().manual_seed(3)).samples
        assert torch.equal(a, b)


class TestDensityFit:
    @pytest.mark.parametrize("n", [8, 200])  # a Gaussian for few samples, a KDE for many
    def test_normalised(self, n):
        g = torch.Generator().manual_seed(0)
        samples = torch.randn(1, n, 2, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.3], dtype=torch.float64)
        log_q = fit_density(samples)
        grid = torch.linspace(-6, 6, 241, dtype=torch.float64)
        z = torch.cartesian_prod(grid, grid)[None]
        mass = log_q(z).exp().sum() * (grid[1] - grid[0]) ** 2
        assert abs(mass.item() - 1) < 1e-3


class TestMarginalLikelihood:
    @pytest.mark.parametrize("latent_dim", [2, 3])
    def test_hmc_estimator_matches_the_exact_value(self, latent_dim):
        """Consistency: with many posterior samples the estimate converges to log p(x)."""
        model = LinearGaussian(latent_dim)
        x = model.sample(200)
        estimate = hmc_log_marginal(model.log_joint, x, latent_dim, settings=MarginalLikelihoodSettings(num_samples=1000),
                                    generator=torch.Generator().manual_seed(0))
        exact = model.exact_log_marginal(x)
        assert abs((estimate - exact).mean().item()) < 0.1

    @pytest.mark.parametrize("latent_dim", [2, 3, 4])
    def test_hmc_estimator_within_005_nats_on_random_models(self, latent_dim):
        """Accuracy at 200 posterior samples (50 burn-in, 4 leapfrog steps) on linear-Gaussian
        models drawn at random (data size, noise and weights), not the ones other tests use."""
        g = torch.Generator().manual_seed(100 + latent_dim)
        for _ in range(3):
            model = LinearGaussian.random(latent_dim, g)
            x = model.sample(100, seed=model.seed + 1)
            estimate = hmc_log_marginal(model.log_joint, x, latent_dim, settings=MarginalLikelihoodSettings(num_samples=200),
                                        generator=torch.Generator().manual_seed(model.seed + 2))
            error = (estimate - model.exact_log_marginal(x)).mean().item()
            assert abs(error) < 0.05, (len(model.b), model.sigma, model.seed, error)

    def test_reports_every_hmc_iteration(self):
        model = LinearGaussian(2)
        ticks = []
        hmc_log_marginal(model.log_joint, model.sample(5), 2, settings=MarginalLikelihoodSettings(num_samples=8, burn_in=6),
                         generator=torch.Generator().manual_seed(0), on_iteration=lambda: ticks.append(1))
        assert len(ticks) == 6 + 8

    @pytest.mark.parametrize("latent_dim", [2, 3])
    def test_importance_estimator_matches_the_exact_value(self, latent_dim):
        model = LinearGaussian(latent_dim)
        x = model.sample(200)
        estimate = importance_log_marginal(model, x, num_samples=2000, generator=torch.Generator().manual_seed(0))
        exact = model.exact_log_marginal(x)
        assert abs((estimate - exact).mean().item()) < 0.1
        # the single-sample estimate is the lower bound: well below, on average
        one = importance_log_marginal(model, x, num_samples=1, generator=torch.Generator().manual_seed(0))
        assert (one - exact).mean() < -0.1

    def test_deterministic_given_a_generator(self):
        model = LinearGaussian(2)
        x = model.sample(5)
        runs = [hmc_log_marginal(model.log_joint, x, 2, generator=torch.Generator().manual_seed(4)) for _ in range(2)]
        assert torch.equal(*runs)
        runs = [importance_log_marginal(model, x, 100, generator=torch.Generator().manual_seed(4)) for _ in range(2)]
        assert torch.equal(*runs)

    def test_warns_from_five_latent_dimensions(self):
        model = LinearGaussian(5)
        with pytest.warns(UserWarning, match="latent_dim=5"):
            hmc_log_marginal(model.log_joint, model.sample(2), 5, settings=MarginalLikelihoodSettings(num_samples=8, burn_in=2))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            hmc_log_marginal(LinearGaussian(3).log_joint, model.sample(2)[:, :8], 3,
                             settings=MarginalLikelihoodSettings(num_samples=8, burn_in=2))


class TestPriorSearch:
    model = LinearGaussian(latent_dim=2, seed=4)

    def test_picks_the_most_probable_draw_for_each_datapoint(self):
        x = self.model.sample(60, seed=2)
        start = prior_search(self.model.log_joint, self.model.prior_sample, x, num_draws=300, chunk_size=7,
                             generator=torch.Generator().manual_seed(3))
        draws = torch.randn(300, 1, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        scores = torch.stack([self.model.log_joint(x, z.expand(60, 2)) for z in draws[:, 0]])  # [K, B]
        torch.testing.assert_close(start, draws[scores.argmax(0), 0])

    def test_starts_near_the_posterior_mode(self):
        x = self.model.sample(200, seed=5)
        mode, cov = self.model.posterior(x)
        start = prior_search(self.model.log_joint, self.model.prior_sample, x, num_draws=2000, generator=torch.Generator().manual_seed(0))
        # within a posterior standard deviation of the mode, in the posterior's own metric
        distance = torch.linalg.solve_triangular(torch.linalg.cholesky(cov), (start - mode).T, upper=False).T.norm(dim=-1)
        assert distance.median() < 1.0
        assert (self.model.log_joint(x, start) > self.model.log_joint(x, torch.zeros_like(start))).float().mean() > 0.9
