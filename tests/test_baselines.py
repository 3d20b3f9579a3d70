"""The baselines of Section 5: wake-sleep's two phases, MCEM's E- and M-steps, both learning a
model whose log p(x) is exact, and both from the command line."""

import copy

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lit_vae.baselines import MCEM, WakeSleep
from lit_vae.datamodules.base import InMemoryDataModule
from lit_vae.events import read_scalars
from lit_vae.linear_gaussian import LinearGaussian
from lit_vae.networks import BernoulliMLPDecoder, GaussianMLPDecoder
from tests.helpers import fit, parameters


class LinearGaussianDecoder(nn.Module):
    """p(x|z) = N(W z + b, diag(exp(logvar))): a decoder with the interface of the MLP decoders
    whose marginal likelihood is known, log p(x) = log N(x; b, W W^T + diag(exp(logvar)))."""

    log_prob = staticmethod(GaussianMLPDecoder.log_prob)
    sample = staticmethod(GaussianMLPDecoder.sample)
    mean = staticmethod(GaussianMLPDecoder.mean)

    def __init__(self, latent_dim: int, data_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(latent_dim, data_dim)
        self.logvar = nn.Parameter(torch.zeros(data_dim))

    def forward(self, z):
        mean = self.linear(z)
        return mean, self.logvar.expand_as(mean)

    def exact_log_marginal(self, x):
        w = self.linear.weight
        cov = w @ w.T + torch.diag(self.logvar.exp())
        return torch.distributions.MultivariateNormal(self.linear.bias, cov).log_prob(x)


def with_linear_decoder(model_class, **kwargs):
    """``model_class`` (the algorithm, unchanged) on a linear-Gaussian generative model."""
    model = model_class(likelihood="gaussian", **kwargs).double()
    model.decoder = LinearGaussianDecoder(kwargs["latent_dim"], kwargs["input_dim"]).double()
    return model


class Points(InMemoryDataModule):
    """Rows of a tensor as the training and test splits."""

    def __init__(self, data, batch_size):
        super().__init__(batch_size=batch_size, eval_batch_size=batch_size, seed=0)
        self.data = data
        self.image_shape = (1, data.shape[1])

    def load_splits(self):
        return {"train": self.data, "test": self.data}


def train(model, data, steps, batch_size=50):
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=Points(data, batch_size))
    return model


TOY = LinearGaussian(latent_dim=2, data_dim=6, noise_std=0.5, seed=3)


class TestWakeSleep:
    def model(self):
        torch.manual_seed(0)
        return WakeSleep(input_dim=20, latent_dim=3, hidden_dim=16, train_size=100)

    def step(self, model, objective):
        """One plain gradient step (no weight decay, which would move every parameter)."""
        before = copy.deepcopy(model)
        model.zero_grad()
        (-objective.mean()).backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p -= 0.1 * p.grad
        changed = {name for name, p in model.named_parameters() if not torch.equal(p, before.get_parameter(name))}
        return changed

    def test_wake_changes_only_the_generative_model(self):
        model = self.model()
        changed = self.step(model, model.wake_bound(torch.rand(8, 20)))
        assert changed == {name for name, _ in model.decoder.named_parameters(prefix="decoder")}

    def test_sleep_changes_only_the_recognition_model(self):
        model = self.model()
        changed = self.step(model, model.sleep_log_density(8))
        assert changed == {name for name, _ in model.encoder.named_parameters(prefix="encoder")}

    def test_sleep_objective_is_log_q_at_dreams_from_the_generative_model(self):
        model = self.model()
        g = torch.Generator().manual_seed(5)
        log_q = model.sleep_log_density(4, g)
        g.manual_seed(5)
        z = torch.randn(4, 3, generator=g)
        x = torch.bernoulli(torch.sigmoid(model.decoder(z)[0]), generator=g)
        mu, logvar = model.encode(x)
        expected = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
        torch.testing.assert_close(log_q, expected)

    def test_wake_bound_is_the_lower_bound(self):
        """The wake sample also gives the SGVB estimate of the bound: the same numbers as
        ``lower_bound`` with the same noise."""
        model = self.model()
        x = torch.rand(8, 20)
        g = torch.Generator()
        torch.testing.assert_close(model.wake_bound(x, g.manual_seed(1)), model.lower_bound(x, 1, g.manual_seed(1)))


class TestDreams:
    """The sleep phase's dreams are draws from p(x|z)."""

    def test_bernoulli(self):
        logits = torch.tensor([[-2.0, 0.0, 1.5]]).expand(20_000, 3)
        draws = BernoulliMLPDecoder.sample((logits,), torch.Generator().manual_seed(0))
        assert set(draws.unique().tolist()) == {0.0, 1.0}
        torch.testing.assert_close(draws.mean(0), torch.sigmoid(logits[0]), atol=0.01, rtol=0)

    def test_gaussian(self):
        mean, logvar = torch.tensor([0.2, 0.7]).expand(20_000, 2), torch.tensor([-2.0, 0.5]).expand(20_000, 2)
        draws = GaussianMLPDecoder.sample((mean, logvar), torch.Generator().manual_seed(0))
        torch.testing.assert_close(draws.mean(0), mean[0], atol=0.03, rtol=0)
        torch.testing.assert_close(draws.var(0), logvar[0].exp(), atol=0.05, rtol=0.03)


class ToyMCEM(MCEM):
    """MCEM's E-step on a generative model with a known posterior."""

    def log_joint(self, x, z):
        return TOY.log_joint(x, z)


class TestMCEM:
    def test_e_step_leaves_the_posterior_invariant(self):
        """Chains started in the exact posterior stay in it, step sizes adapt toward 90%
        acceptance, and the chains move."""
        n = 4000
        x = TOY.sample(n, seed=7)
        mean, cov = TOY.posterior(x)
        chol = torch.linalg.cholesky(cov)
        g = torch.Generator().manual_seed(0)
        model = ToyMCEM(input_dim=6, latent_dim=2, hidden_dim=4, train_size=n, initial_step_size=0.05).double()
        model.chains.copy_(mean + torch.randn(n, 2, generator=g, dtype=torch.float64) @ chol.T)
        index = torch.arange(n)
        start = model.chains.clone()
        for _ in range(40):
            z, _ = model.e_step(x, index, g)
        # standardised by the exact posterior, the chains are N(0, I)
        u = torch.linalg.solve_triangular(chol, (z - mean).T, upper=False).T
        torch.testing.assert_close(u.mean(0), torch.zeros(2, dtype=torch.float64), atol=0.06, rtol=0)
        torch.testing.assert_close(torch.cov(u.T), torch.eye(2, dtype=torch.float64), atol=0.08, rtol=0)
        assert torch.equal(model.chains, z)  # persisted for the next visit
        assert (z != start).any(-1).float().mean() > 0.9
        assert model.step_sizes.median() > 0.05  # at 0.05 nearly every move is accepted: it grows

    @pytest.mark.parametrize("initial_step_size", [0.01, 3.0])  # from too small and from too large
    def test_step_sizes_reach_the_target_acceptance(self, initial_step_size):
        n = 200
        x = TOY.sample(n, seed=8)
        g = torch.Generator().manual_seed(0)
        model = ToyMCEM(input_dim=6, latent_dim=2, hidden_dim=4, train_size=n, initial_step_size=initial_step_size,
                        step_size_gain=0.3).double()
        model.chains.copy_(TOY.posterior(x)[0])
        accept = torch.stack([model.e_step(x, torch.arange(n), g)[1] for _ in range(300)])
        assert abs(accept[-100:].mean().item() - 0.9) < 0.03

    def test_m_step_increases_log_joint_at_the_sample(self):
        torch.manual_seed(0)
        data = torch.rand(100, 20)
        model = MCEM(input_dim=20, latent_dim=3, hidden_dim=16, train_size=100, adagrad_warmup_batches=0, learning_rate=0.1)
        before = copy.deepcopy(model)
        train(model, data, steps=5, batch_size=100)  # one minibatch: the E-step, then 5 updates
        # the batch holds all 100 datapoints; their chains hold the E-step's sample
        z = model.chains[torch.arange(100)]
        assert not torch.equal(z, before.chains)
        assert model.samples_evaluated == 100 and model.trainer.global_step == 5
        gain = model.log_joint(data, z).mean() - before.log_joint(data, z).mean()
        assert gain > 0.1, gain  # ~0.15 nats; an update in the wrong direction loses as much


class TestLinearGaussian:
    """Both algorithms, unchanged, on a linear-Gaussian generative model: its exact log p(x)
    must rise from the initial model's (~ -24 nats) at least halfway to the true model's (~ -9.5)."""

    @pytest.mark.parametrize(("model_class", "steps"), [(WakeSleep, 300), (MCEM, 5 * 150)])  # MCEM: 5 updates a minibatch
    def test_exact_log_likelihood_rises(self, model_class, steps):
        torch.manual_seed(0)
        data = TOY.sample(500)
        model = with_linear_decoder(model_class, input_dim=6, latent_dim=2, hidden_dim=20, train_size=500,
                                    learning_rate=0.1, adagrad_warmup_batches=0)
        before = model.decoder.exact_log_marginal(data).mean().item()
        train(model, data, steps=steps)
        after = model.decoder.exact_log_marginal(data).mean().item()
        best = TOY.exact_log_marginal(data).mean().item()
        assert after > before + 0.5 * (best - before), (before, after, best)


@pytest.mark.slow
class TestCommandLine:
    def test_wake_sleep_logs_the_lower_bound_curves(self, tmp_path, data_dir):
        fit(tmp_path, data_dir, "--model.init_args.hidden_dim=50", "--data.init_args.train_size=10000",
            "--trainer.max_steps=250", config="figure2_wake_sleep_mnist.yaml")
        run = tmp_path / "runs" / "mnist_nz20_wake_sleep" / "version_0"
        scalars = read_scalars(run)
        assert [s for s, _ in scalars["lower_bound/train"]] == [10_000, 20_000]
        test = scalars["lower_bound/test"]
        assert [s for s, _ in test[-2:]] == [20_000, 25_000]  # the schedule's last point, then the end of the fit
        assert test[-1][1] > test[0][1] + 100
        assert WakeSleep.load_from_checkpoint(run / "checkpoints" / "last.ckpt").samples_evaluated == 25_000

    def test_mcem_logs_the_marginal_likelihood_and_resumes_exactly(self, tmp_path, data_dir):
        args = ("--trainer.max_steps=250", "--model.init_args.hidden_dim=20", "--model.init_args.adagrad_warmup_batches=0",
                "--checkpoint.every_n_train_steps=50", "--marginal_likelihood.start=2000",
                "--marginal_likelihood.settings.num_datapoints=20", "--marginal_likelihood.settings.num_samples=20",
                "--marginal_likelihood.settings.burn_in=20")
        fit(tmp_path / "whole", data_dir, *args, config="figure3_n1000_mcem.yaml")
        fit(tmp_path / "parts", data_dir, *args[1:], "--trainer.max_steps=100", config="figure3_n1000_mcem.yaml")
        fit(tmp_path / "parts", data_dir, *args, "--ckpt_path=last", config="figure3_n1000_mcem.yaml")
        whole = tmp_path / "whole" / "runs" / "figure3_n1000_mcem" / "version_0"
        parts = tmp_path / "parts" / "runs" / "figure3_n1000_mcem" / "version_0"
        a, b = parameters(whole / "checkpoints" / "last.ckpt"), parameters(parts / "checkpoints" / "last.ckpt")
        assert {"chains", "step_sizes"} <= a.keys() and all(torch.equal(a[k], b[k]) for k in a)
        scalars = read_scalars(whole)
        assert not any(tag.startswith("lower_bound") for tag in scalars)
        # 250 weight updates = 50 minibatches = 5,000 samples; evaluated at 2,000 and 5,000
        assert [s for s, _ in scalars["marginal_likelihood/test"]] == [2_000, 5_000]
        train_ml = scalars["marginal_likelihood/train"]
        assert train_ml[-1][1] > train_ml[0][1] + 10  # ~ -209 -> -191
        assert sorted(p.name for p in (whole / "images").iterdir()) == ["manifold_5000.png", "samples_5000.png"]

    def test_mcem_refuses_more_than_one_process(self, tmp_path, data_dir, capsys):
        with pytest.raises(SystemExit):
            fit(tmp_path, data_dir, "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.max_steps=5",
                config="figure3_n1000_mcem.yaml")
        assert "MCEM keeps an HMC chain per training datapoint in one process" in capsys.readouterr().err
        assert not (tmp_path / "runs").exists()

    def test_a_wake_sleep_checkpoint_does_not_resume_a_vae(self, tmp_path, data_dir, capsys):
        """Same parameters, other algorithm: refused by the class saved in the checkpoint. (An
        explicit ``--ckpt_path FILE`` instead restores the class it was trained with, as
        LightningCLI does with hyperparameters.)"""
        args = ("--model.init_args.hidden_dim=20", "--trainer.logger.init_args.name=mine")
        fit(tmp_path, data_dir, *args, "--trainer.max_steps=5", "--checkpoint.every_n_train_steps=5",
            config="figure2_wake_sleep_mnist.yaml")
        run = tmp_path / "runs" / "mine" / "version_0"
        before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
        with pytest.raises(SystemExit):
            fit(tmp_path, data_dir, *args, "--trainer.max_steps=10", "--ckpt_path=last")
        assert "holds a WakeSleep, not a VAE" in capsys.readouterr().err
        assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == before
