"""Speed of the Appendix D estimator in the paper's setting, against a training epoch; and its
accuracy on linear-Gaussian models with an exact log p(x).

    python benchmarks/marginal_likelihood.py [--ckpt runs/.../last.ckpt]
    python benchmarks/marginal_likelihood.py --accuracy

Appendix D's protocol as the estimator and the callback use it (``lit_vae.appendix_d.DEFAULT_SETTINGS``:
the first 1,000 MNIST test or train points, 50 posterior samples of 4 leapfrog steps after 50
burn-in iterations), on Nz = 3 with 500 hidden units, 2 threads. Without ``--ckpt`` the model is freshly
initialised: the cost of an HMC iteration does not depend on the parameters' values. The epoch
time is measured with the plain training loop of ``throughput.py`` on the same network. With a
checkpoint it also prints the lower bound and a 5,000-sample importance estimate of the same points.

``--accuracy``: the estimator's mean error per model (200 points each) on 5 random linear-Gaussian
models per latent size 2, 3, 4 (data size, noise and weights drawn from seed 7000 + Nz), with the
paper's 50 posterior samples and with 200, with a fixed step size as in the paper and with the
jittered one used here, side by side: same gradient count, same cross-fitted q.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.throughput import plain_loop  # noqa: E402
from lit_vae import VAE  # noqa: E402
from lit_vae.appendix_d import DEFAULT_SETTINGS, PAPER_APPENDIX_D  # noqa: E402
from lit_vae.datamodules import MNISTDataModule  # noqa: E402
from lit_vae.linear_gaussian import LinearGaussian  # noqa: E402
from lit_vae.marginal_likelihood import hmc_log_marginal, importance_log_marginal  # noqa: E402


def accuracy() -> None:
    """Print the mean and largest |mean error| of the HMC estimator over random linear-Gaussian models."""
    for num_samples in (DEFAULT_SETTINGS.num_samples, 200):
        for protocol in (PAPER_APPENDIX_D, DEFAULT_SETTINGS):
            settings = replace(protocol, num_samples=num_samples)
            errors = []
            for latent_dim in (2, 3, 4):
                g = torch.Generator().manual_seed(7000 + latent_dim)
                for _ in range(5):
                    model = LinearGaussian.random(latent_dim, g)
                    x = model.sample(200, seed=model.seed + 1)
                    estimate = hmc_log_marginal(model.log_joint, x, latent_dim, settings=settings,
                                                generator=torch.Generator().manual_seed(model.seed + 2))
                    errors.append((estimate - model.exact_log_marginal(x)).mean().item())
            print(f"{num_samples:>3} samples, step jitter {settings.step_jitter:.1f}: mean error {sum(errors) / len(errors):+.3f} nats, "
                  f"largest |error| {max(map(abs, errors)):.3f} over {len(errors)} models")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", help="a trained VAE checkpoint with latent_dim 3 (default: a fresh 784-500-3 model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--split", choices=["train", "test"], default="test", help="whose first points")
    parser.add_argument("--importance-samples", type=int, default=5000)
    parser.add_argument("--data-dir", default=os.environ.get("LIT_VAE_DATA_DIR", "data"))
    parser.add_argument("--accuracy", action="store_true", help="the estimator's error on linear-Gaussian models instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.accuracy:
        return accuracy()

    data = MNISTDataModule(data_dir=args.data_dir, download=False)
    data.setup()
    protocol = DEFAULT_SETTINGS
    x = data.splits[args.split][: protocol.num_datapoints]
    torch.manual_seed(0)
    model = VAE.load_from_checkpoint(args.ckpt) if args.ckpt else VAE(latent_dim=3, hidden_dim=500)
    model.eval()
    hidden, latent = model.hparams.hidden_dim, model.latent_dim

    started = time.perf_counter()
    mu, _ = model.encode(x)
    estimate = hmc_log_marginal(model.log_joint, x, latent, init=mu.detach(), generator=torch.Generator().manual_seed(0))
    hmc_seconds = time.perf_counter() - started
    started = time.perf_counter()
    importance = importance_log_marginal(model, x, args.importance_samples, generator=torch.Generator().manual_seed(0))
    importance_seconds = time.perf_counter() - started
    with torch.no_grad():
        bound = model.lower_bound(x, generator=torch.Generator().manual_seed(0))
    samples_per_second = plain_loop(data.splits["train"], steps=300, warmup=50, hidden_dim=hidden, latent_dim=latent)
    epoch_seconds = 50_000 / samples_per_second

    hmc_label = f"HMC estimator ({protocol.num_samples} samples x {protocol.num_leapfrog} leapfrog, {protocol.burn_in} burn-in)"
    print(f"model 784-{hidden}-{latent}, first {protocol.num_datapoints:,} {args.split} points, threads={args.threads}")
    print(f"lower bound (L = 1)                                          log p(x) >= {bound.mean():.2f}")
    print(f"{hmc_label:<53}{hmc_seconds:6.1f} s   log p(x) = {estimate.mean():.2f}")
    print(f"importance estimate ({args.importance_samples:,} samples)" + " " * (27 - len(f"{args.importance_samples:,}"))
          + f"{importance_seconds:6.1f} s   log p(x) = {importance.mean():.2f}")
    print(f"one training epoch (50,000 samples, plain loop)      {epoch_seconds:6.1f} s")
    print(f"HMC estimator = {hmc_seconds / epoch_seconds:.1f} training epochs")


if __name__ == "__main__":
    main()
