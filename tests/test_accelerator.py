"""An accelerator when asked (``--trainer.accelerator gpu``): training, the bounds, the HMC and
importance estimates of Appendix D, and checkpoints on the device agree with the CPU's, and a
checkpoint moves between the two. Runs where a GPU is present and is skipped elsewhere (on a
CPU-only machine asking for a GPU is refused in one line: tests/test_reliability.py).

The device draws its noise from a generator of its own, so its numbers are not the CPU's bit
for bit: each is judged against the spread the CPU itself shows when only its seed changes."""

import pytest
import torch

from lit_vae.callbacks.checkpoint_files import read_checkpoint
from tests.helpers import evaluate, fit

ACCELERATOR = "gpu"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")]

SMALL = ("--model.init_args.latent_dim=2", "--model.init_args.hidden_dim=50", "--seed_everything=1")


def fit_on(tmp_path, data_dir, accelerator, *args):
    cli = fit(tmp_path / accelerator, data_dir, *SMALL, f"--trainer.accelerator={accelerator}", "--trainer.max_steps=300", *args)
    return cli, tmp_path / accelerator / "runs" / "mnist_nz2" / "version_0" / "checkpoints" / "last.ckpt"


def bound(cli):
    return float(cli.trainer.callback_metrics["lower_bound/test"])


def test_a_fit_on_the_device_lands_where_the_cpu_fit_does(tmp_path, data_dir):
    cpu, _ = fit_on(tmp_path / "seed1", data_dir, "cpu")
    other_seed, _ = fit_on(tmp_path / "seed2", data_dir, "cpu", "--seed_everything=2")
    device, checkpoint = fit_on(tmp_path / "seed1", data_dir, ACCELERATOR)
    # Same initial weights and data order; only the noise stream differs, less than a new seed.
    assert abs(bound(device) - bound(cpu)) <= max(2 * abs(bound(other_seed) - bound(cpu)), 0.5)
    state = read_checkpoint(checkpoint)  # a device run's checkpoint reads onto the CPU
    assert all(t.device.type == "cpu" for t in state["state_dict"].values())


def test_a_checkpoint_moves_between_the_cpu_and_the_device(tmp_path, data_dir):
    for trained, resumed in (("cpu", ACCELERATOR), (ACCELERATOR, "cpu")):
        _, checkpoint = fit_on(tmp_path / trained, data_dir, trained)
        cli = fit(tmp_path / trained, data_dir, *SMALL, f"--trainer.accelerator={resumed}", "--trainer.max_steps=400",
                  f"--ckpt_path={checkpoint}")
        assert cli.trainer.strategy.root_device.type == ("cpu" if resumed == "cpu" else "cuda")
        assert cli.model.samples_evaluated == 40_000 and cli.trainer.global_step == 400


def test_the_bound_and_both_marginal_likelihood_estimates_agree_with_the_cpus(tmp_path, data_dir):
    _, checkpoint = fit_on(tmp_path, data_dir, "cpu")
    tags = ("lower_bound/test", "marginal_likelihood/test", "marginal_likelihood_importance/test")

    def estimates(accelerator, seed):
        cli = evaluate(tmp_path / f"{accelerator}{seed}", data_dir, checkpoint, f"--trainer.accelerator={accelerator}",
                       f"--marginal_likelihood.seed={seed}", "--marginal_likelihood.settings.num_datapoints=200")
        return {tag: float(cli.trainer.callback_metrics[tag]) for tag in tags}

    cpu, other_seed, device = estimates("cpu", 0), estimates("cpu", 1), estimates(ACCELERATOR, 0)
    for tag in tags:  # the device's noise is another stream, as another seed's is
        assert abs(device[tag] - cpu[tag]) <= max(3 * abs(other_seed[tag] - cpu[tag]), 0.2), tag
