"""Algorithm 1's update: Adagrad as in the paper-era code, with the parameter prior as weight decay."""

import torch

from lit_vae import VAE


def _step(model, optimizer, scheduler, x):
    optimizer.zero_grad()
    loss = -model.lower_bound(x).mean()
    loss.backward()
    optimizer.step()
    scheduler.step()


class TestAdagrad:
    def setup_method(self):
        torch.manual_seed(0)
        self.model = VAE(input_dim=20, hidden_dim=8, latent_dim=2, learning_rate=0.1, train_size=50, adagrad_warmup_batches=3)
        config = self.model.configure_optimizers()
        self.optimizer, self.scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
        self.x = torch.rand(10, 20)

    def params(self):
        return [p.detach().clone() for p in self.model.parameters()]

    def test_first_batches_only_accumulate(self):
        before = self.params()
        for _ in range(3):
            _step(self.model, self.optimizer, self.scheduler, self.x)
        assert all(torch.equal(a, b) for a, b in zip(before, self.params()))
        sums = [self.optimizer.state[p]["sum"] for p in self.model.parameters()]
        assert all((s > 0).any() for s in sums)
        _step(self.model, self.optimizer, self.scheduler, self.x)
        assert not all(torch.equal(a, b) for a, b in zip(before, self.params()))

    def test_update_is_adagrad_with_prior_gradient(self):
        """theta <- theta + lr * g / (sqrt(sum g^2) + 1e-8), g = grad(L) - theta / N (prior N(0, I))."""
        generator_state = torch.get_rng_state()
        sums = [torch.zeros_like(p) for p in self.model.parameters()]
        for k in range(5):
            theta = self.params()
            torch.set_rng_state(generator_state)
            self.model.zero_grad()
            (-self.model.lower_bound(self.x).mean()).backward()
            grads = [p.grad.detach().clone() + t / 50 for p, t in zip(self.model.parameters(), theta)]
            torch.set_rng_state(generator_state)
            _step(self.model, self.optimizer, self.scheduler, self.x)
            lr = 0.0 if k < 3 else 0.1
            for p, t, g, s in zip(self.model.parameters(), theta, grads, sums):
                s += g * g
                torch.testing.assert_close(p.detach(), t - lr * g / (s.sqrt() + 1e-8))

    def test_no_prior_no_decay(self):
        model = VAE(input_dim=20, hidden_dim=8, latent_dim=2, parameter_prior=False)
        assert model.configure_optimizers()["optimizer"].param_groups[0]["weight_decay"] == 0
        assert self.optimizer.param_groups[0]["weight_decay"] == 1 / 50
        assert self.optimizer.param_groups[0]["eps"] == 1e-8
