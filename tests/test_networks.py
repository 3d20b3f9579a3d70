"""The encoder and decoders of Appendix C against torch.distributions."""

import math

import pytest
import torch
import yaml
from torch.distributions import Bernoulli, Normal

from lit_vae import VAE
from lit_vae.networks import LOGVAR_RANGE, BernoulliMLPDecoder, GaussianMLPDecoder, GaussianMLPEncoder, soft_clamp
from tests.helpers import REPO


class TestBernoulliDecoder:
    def setup_method(self):
        torch.manual_seed(0)
        self.decoder = BernoulliMLPDecoder(latent_dim=4, hidden_dims=8, output_dim=6)
        self.z = torch.randn(3, 5, 4)  # [L, B, Nz]

    def test_log_prob_matches_torch_on_binary_data(self):
        x = torch.bernoulli(torch.full((5, 6), 0.4))
        params = self.decoder(self.z)
        expected = Bernoulli(logits=params[0]).log_prob(x.expand(3, 5, 6)).sum(-1)
        torch.testing.assert_close(self.decoder.log_prob(x, params), expected)

    def test_log_prob_on_grey_levels_is_the_cross_entropy(self):
        """Eq. 11 with x in [0, 1]: sum x log y + (1 - x) log(1 - y)."""
        x = torch.rand(5, 6)
        params = self.decoder(self.z)
        y = self.decoder.mean(params)
        expected = (x * y.log() + (1 - x) * (1 - y).log()).sum(-1)
        torch.testing.assert_close(self.decoder.log_prob(x, params), expected)
        assert ((y > 0) & (y < 1)).all()


class TestMaxLogLikelihood:
    def test_bernoulli_log_prob_never_exceeds_zero(self):
        torch.manual_seed(0)
        decoder = BernoulliMLPDecoder(latent_dim=2, hidden_dims=8, output_dim=6)
        with torch.no_grad():
            decoder.logits.bias.fill_(30.0)  # y -> 1: a binary x = 1 gets log p(x|z) -> 0 from below
        x = torch.cat([torch.ones(1, 6), torch.rand(4, 6)])
        log_prob = decoder.log_prob(x, decoder(torch.randn(5, 2)))
        assert decoder.max_log_likelihood() == 0.0
        assert (log_prob <= 0).all() and log_prob[0] > -1e-6


class TestGaussianDecoder:
    def test_log_prob_matches_torch(self):
        torch.manual_seed(0)
        decoder = GaussianMLPDecoder(latent_dim=2, hidden_dims=8, output_dim=6)
        z, x = torch.randn(3, 5, 2), torch.rand(5, 6)
        mean, logvar = decoder(z)
        expected = Normal(mean, (0.5 * logvar).exp()).log_prob(x.expand(3, 5, 6)).sum(-1)
        torch.testing.assert_close(decoder.log_prob(x, (mean, logvar)), expected)

    def test_mean_is_squashed_into_the_unit_interval(self):
        decoder = GaussianMLPDecoder(latent_dim=2, hidden_dims=8, output_dim=6)
        with torch.no_grad():
            decoder.mu.bias.fill_(100.0)
        mean, _ = decoder(torch.randn(5, 2))
        assert ((mean > 0) & (mean <= 1)).all()

    def test_log_variance_stays_in_its_range(self):
        decoder = GaussianMLPDecoder(latent_dim=2, hidden_dims=8, output_dim=6)
        for bias, end in ((1e3, max(LOGVAR_RANGE)), (-1e3, min(LOGVAR_RANGE))):
            with torch.no_grad():
                decoder.logvar.bias.fill_(bias)
            _, logvar = decoder(torch.randn(5, 2))
            torch.testing.assert_close(logvar, torch.full_like(logvar, end))

    def test_log_variance_range_is_one_grey_level_to_one(self):
        low, high = LOGVAR_RANGE
        assert math.exp(low / 2) == pytest.approx(1 / 256) and high == 0.0

    def test_unbounded_log_variance_is_the_linear_output(self):
        torch.manual_seed(0)
        decoder = GaussianMLPDecoder(latent_dim=2, hidden_dims=8, output_dim=6, logvar_range=None)
        z = torch.randn(5, 2)
        with torch.no_grad():
            decoder.logvar.bias.fill_(-40.0)
        _, logvar = decoder(z)
        torch.testing.assert_close(logvar, torch.tanh(z @ decoder.hidden.weight.T + decoder.hidden.bias) @ decoder.logvar.weight.T - 40.0)
        assert decoder.max_log_likelihood() == math.inf

    def test_empty_range_is_refused(self):
        with pytest.raises(ValueError, match="logvar_range"):
            GaussianMLPDecoder(2, 8, 6, logvar_range=(0.0, -1.0))

    def test_max_log_likelihood_is_reached_at_the_mean_with_the_least_variance(self):
        """6 pixels at sigma = 1/256: 6 x (log 256 - log(2 pi) / 2) = 27.76 nats, by hand."""
        decoder = GaussianMLPDecoder(latent_dim=2, hidden_dims=8, output_dim=6)
        assert decoder.max_log_likelihood() == pytest.approx(6 * (math.log(256) - 0.5 * math.log(2 * math.pi)))
        with torch.no_grad():
            decoder.logvar.bias.fill_(-1e3)
        mean, logvar = decoder(torch.randn(5, 2))
        log_prob = decoder.log_prob(mean, (mean, logvar))
        torch.testing.assert_close(log_prob, torch.full((5,), 27.7604), atol=1e-2, rtol=0)  # float32 sums
        assert (log_prob <= decoder.max_log_likelihood() + 1e-3).all()


class TestSoftClamp:
    def test_identity_inside_and_the_ends_outside(self):
        x = torch.linspace(-1000.0, 1000.0, 20_001, dtype=torch.float64)
        y = soft_clamp(x, -20.0, 20.0)
        inside = x.abs() <= 10  # at least 10 from both ends: within e^-10
        torch.testing.assert_close(y[inside], x[inside], atol=5e-5, rtol=0)
        assert y.min() >= -20.0 - 1e-9 and y.max() <= 20.0 + 1e-9
        torch.testing.assert_close(y[x.abs() >= 40], 20.0 * x[x.abs() >= 40].sign(), atol=1e-8, rtol=0)

    def test_gradient_is_positive_around_the_range(self):
        """Where a hard clamp's gradient is zero (just outside), this one still points back."""
        x = torch.linspace(-30.0, 30.0, 601, dtype=torch.float64, requires_grad=True)
        soft_clamp(x, -20.0, 20.0).sum().backward()
        assert (x.grad > 0).all()
        torch.testing.assert_close(x.grad[x.abs() <= 10], torch.ones_like(x.grad[x.abs() <= 10]), atol=1e-4, rtol=0)


class TestEncoder:
    def test_shapes(self):
        mu, logvar = GaussianMLPEncoder(784, 500, 20)(torch.rand(7, 784))
        assert mu.shape == logvar.shape == (7, 20)

    def test_logvar_scale_multiplies_the_log_variance_only(self):
        torch.manual_seed(0)
        plain, scaled = GaussianMLPEncoder(12, 8, 3), GaussianMLPEncoder(12, 8, 3, logvar_scale=0.1)
        scaled.load_state_dict(plain.state_dict())
        x = torch.rand(4, 12)
        (mu, logvar), (mu_scaled, logvar_scaled) = plain(x), scaled(x)
        torch.testing.assert_close(mu_scaled, mu)
        torch.testing.assert_close(logvar_scaled, 0.1 * logvar)


class TestHiddenLayers:
    """``hidden_dims``: several tanh hidden layers; the paper's one layer keeps its parameter names."""

    def test_a_one_layer_network_keeps_its_parameter_names(self):
        assert set(GaussianMLPEncoder(12, 8, 3).state_dict()) == {
            "hidden.weight", "hidden.bias", "mu.weight", "mu.bias", "logvar.weight", "logvar.bias"}
        assert set(BernoulliMLPDecoder(3, [8], 12).state_dict()) == {"hidden.weight", "hidden.bias", "logits.weight", "logits.bias"}

    def test_two_layers_compute_tanh_of_tanh(self):
        torch.manual_seed(0)
        encoder, x = GaussianMLPEncoder(12, [8, 5], 3), torch.rand(4, 12)
        (layer2,) = encoder.more_hidden
        h = torch.tanh(torch.tanh(x @ encoder.hidden.weight.T + encoder.hidden.bias) @ layer2.weight.T + layer2.bias)
        mu, logvar = encoder(x)
        torch.testing.assert_close(mu, h @ encoder.mu.weight.T + encoder.mu.bias)
        torch.testing.assert_close(logvar, h @ encoder.logvar.weight.T + encoder.logvar.bias)

    def test_the_iwae_papers_model_has_its_shapes_and_parameter_count(self):
        """784-200-200-50 with a mirrored decoder (Burda et al. 2015, Section 5): counted by hand."""
        model = VAE(input_dim=784, hidden_dims=[200, 200], latent_dim=50)
        shapes = [tuple(p.shape) for p in model.parameters()]
        assert shapes[:6] == [(200, 784), (200,), (200, 200), (200,), (50, 200), (50,)]
        assert shapes[8:] == [(200, 50), (200,), (200, 200), (200,), (784, 200), (784,)]
        encoder = 784 * 200 + 200 + 200 * 200 + 200 + 2 * (200 * 50 + 50)
        decoder = 50 * 200 + 200 + 200 * 200 + 200 + 200 * 784 + 784
        assert sum(p.numel() for p in model.parameters()) == encoder + decoder == 425_284
        assert model(torch.rand(3, 784)).shape == (3,)

    def test_the_shipped_iwae_config_is_that_model(self):
        config = yaml.safe_load((REPO / "configs" / "iwae_mnist.yaml").read_text())
        model = VAE(input_dim=784, **config["model"]["init_args"])
        assert sum(p.numel() for p in model.parameters()) == 425_284
        assert config["data"]["init_args"]["binarize"] == "dynamic"

    @pytest.mark.parametrize(("hidden_dims", "message"), [([], "hidden_dims must name at least one layer"),
                                                           ([200, 0], "hidden_dims\\[1\\] must be positive, got 0")])
    def test_a_bad_list_is_refused(self, hidden_dims, message):
        with pytest.raises(ValueError, match=message):
            VAE(hidden_dims=hidden_dims)


class TestVAE:
    def test_initialisation_is_normal_with_std_0_01(self):
        torch.manual_seed(0)
        params = torch.cat([p.detach().flatten() for p in VAE().parameters()])
        assert abs(params.std().item() - 0.01) < 2e-4
        assert abs(params.mean().item()) < 1e-4

    @pytest.mark.parametrize(("prior_on", "biases_decay"), [("all", True), ("weights", False)])
    def test_the_parameter_prior_decays_what_prior_on_names(self, prior_on, biases_decay):
        """With a zero loss gradient, Adagrad's first step moves each decayed parameter by
        -lr g / (|g| + eps), g = p / N, and leaves the others where they are."""
        torch.manual_seed(0)
        model = VAE(input_dim=12, hidden_dim=8, latent_dim=3, adagrad_warmup_batches=0, train_size=10, prior_on=prior_on)
        optimizer = model.configure_optimizers()["optimizer"]
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()
        for name, p in model.named_parameters():
            decays = p.ndim > 1 or biases_decay
            g = before[name] / 10
            expected = before[name] - 0.02 * g / (g.abs() + 1e-8) if decays else before[name]
            torch.testing.assert_close(p.detach(), expected, atol=1e-6, rtol=0, msg=name)

    def test_log_joint_is_likelihood_plus_prior(self):
        model = VAE(input_dim=12, hidden_dim=8, latent_dim=3, likelihood="gaussian")
        x, z = torch.rand(4, 12), torch.randn(6, 4, 3)
        expected = model.log_likelihood(x, z) + Normal(0.0, 1.0).log_prob(z).sum(-1)
        torch.testing.assert_close(model.log_joint(x, z), expected)
        assert model.log_joint(x, z).shape == (6, 4)

    def test_lower_bound_is_expected_log_joint_plus_entropy_of_q(self):
        """L = E_q[log p(x, z)] + H(q) per datapoint, against an independent estimate: torch's
        Normal for q's entropy and its own draws of z."""
        torch.manual_seed(0)
        model = VAE(input_dim=12, hidden_dim=8, latent_dim=3, init_std=0.5)
        x = torch.rand(4, 12)
        with torch.no_grad():
            bound = model.lower_bound(x, num_samples=20_000, generator=torch.Generator().manual_seed(1))
            mu, logvar = model.encode(x)
            q = Normal(mu, (0.5 * logvar).exp())
            log_joint = model.log_joint(x, q.sample((20_000,)))
        expected = log_joint.mean(0) + q.entropy().sum(-1)
        stderr = log_joint.std(0) / 20_000**0.5
        assert bound.shape == (4,)
        assert ((bound - expected).abs() < 5 * stderr).all(), (bound, expected, stderr)

    def test_sample_gives_decoder_means(self):
        model = VAE(input_dim=12, hidden_dim=8, latent_dim=3)
        x = model.sample(9, generator=torch.Generator().manual_seed(0))
        assert x.shape == (9, 12) and ((x > 0) & (x < 1)).all()
        torch.testing.assert_close(x, model.sample(9, generator=torch.Generator().manual_seed(0)))

    @pytest.mark.parametrize(("argument", "value"), [
        ("latent_dim", 0), ("hidden_dim", -1), ("learning_rate", -0.1), ("num_samples", 0),
        ("train_size", 0), ("adagrad_warmup_batches", -1), ("likelihood", "poisson"), ("estimator", "C"),
    ])
    def test_invalid_arguments_name_themselves(self, argument, value):
        with pytest.raises(ValueError, match=argument):
            VAE(**{argument: value})
