"""The marginal-likelihood callback during fit and test, through the real CLI."""

import pytest
import torch

from lit_vae.callbacks import MarginalLikelihoodCallback
from lit_vae.callbacks.marginal_likelihood import Progress
from lit_vae.events import read_scalars
from lit_vae.networks import BernoulliMLPDecoder
from tests.helpers import evaluate, fit, parameters

# Whole runs through the CLI: the slow tier (pytest -m "not slow" leaves them out).
pytestmark = pytest.mark.slow

FAST = (
    "--model.init_args.hidden_dim=50", "--trainer.max_steps=30", "--model.init_args.adagrad_warmup_batches=0",
    "--marginal_likelihood.start=1000", "--marginal_likelihood.settings.num_datapoints=40",
    "--marginal_likelihood.settings.num_samples=20", "--marginal_likelihood.settings.burn_in=20",
    "--marginal_likelihood.settings.importance_samples=50", "--marginal_likelihood.chunk_size=20",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    """The Figure 3 configuration (Ntrain = 1000) for 3 epochs, with and without the estimates."""
    tmp = tmp_path_factory.mktemp("figure3")
    fit(tmp / "with", data_dir, *FAST, config="figure3_n1000.yaml")
    fit(tmp / "without", data_dir, *FAST, "--marginal_likelihood.during_fit=false", config="figure3_n1000.yaml")
    return tmp / "with" / "runs" / "figure3_n1000" / "version_0", tmp / "without" / "runs" / "figure3_n1000" / "version_0"


class TestProgress:
    def test_plain_lines_without_cursor_codes_when_not_a_terminal(self, capsys):
        progress = Progress(25, "log p(x), test", show=True)  # pytest's captured stderr is no terminal
        for _ in range(25):
            progress.tick()
        progress.close()
        lines = capsys.readouterr().err.splitlines()
        assert [line.split(" of ")[0] for line in lines] == [f"log p(x), test: {p}%" for p in (12, 20, 32, 40, 52, 60, 72, 80, 92, 100)]
        assert not any("\r" in line or "\x1b" in line for line in lines)

    def test_silent_when_not_shown(self, capsys):
        progress = Progress(10, "log p(x), test", show=False)
        for _ in range(10):
            progress.tick()
        assert capsys.readouterr().err == ""


class TestDuringFit:
    def test_logs_both_estimates_at_the_schedule(self, runs):
        scalars = read_scalars(runs[0])
        for tag in ("marginal_likelihood/train", "marginal_likelihood/test",
                    "marginal_likelihood_importance/train", "marginal_likelihood_importance/test"):
            assert [step for step, _ in scalars[tag]] == [1000, 2000]  # 10^3, 2 x 10^3 (the end, 3,000, is off the schedule)
            assert all(-800 < value < -100 for _, value in scalars[tag])

    def test_estimates_rise_with_training(self, runs):
        scalars = read_scalars(runs[0])
        for tag in ("marginal_likelihood/train", "marginal_likelihood_importance/test"):
            assert scalars[tag][-1][1] > scalars[tag][0][1]

    def test_leaves_training_untouched(self, runs):
        """Same parameters and the same lower-bound curve with and without the evaluations."""
        a = parameters(runs[0] / "checkpoints" / "last.ckpt")
        b = parameters(runs[1] / "checkpoints" / "last.ckpt")
        assert all(torch.equal(a[k], b[k]) for k in a)
        with_ml, without = read_scalars(runs[0]), read_scalars(runs[1])
        assert with_ml["lower_bound/train"] == without["lower_bound/train"]
        assert with_ml["lower_bound/test"] == without["lower_bound/test"]
        assert "marginal_likelihood/train" not in without


class TestOnTest:
    def test_reports_both_estimates_above_the_lower_bound(self, runs, tmp_path, data_dir):
        result = evaluate(tmp_path, data_dir, runs[1] / "checkpoints" / "last.ckpt",
                          "--marginal_likelihood.settings.num_datapoints=100", "--marginal_likelihood.settings.importance_samples=200",
                          config="figure3_n1000.yaml")
        assert "lower_bound/test" in result.trainer.callback_metrics
        scalars = read_scalars(tmp_path)
        (step, hmc_estimate), = scalars["marginal_likelihood/test"]
        (_, importance), = scalars["marginal_likelihood_importance/test"]
        assert step == 3000  # the checkpoint's samples evaluated
        (callback,) = [c for c in result.trainer.callbacks if isinstance(c, MarginalLikelihoodCallback)]
        assert callback.results["marginal_likelihood/test"] == pytest.approx(hmc_estimate, abs=1e-4)
        # log p(x) >= the lower bound of the same 100 points, for both estimates
        assert importance > callback.results["lower_bound/test"]
        assert hmc_estimate > callback.results["lower_bound/test"]

    def test_an_impossible_estimate_is_reported_as_failed_never_as_a_number(self, runs, tmp_path, data_dir, monkeypatch,
                                                                            caplog):
        """A decoder rigged to put log p(x|z) 1,000 nats above its maximum (0 under Eq. 11)."""
        log_prob = BernoulliMLPDecoder.log_prob
        monkeypatch.setattr(BernoulliMLPDecoder, "log_prob", staticmethod(lambda x, params: log_prob(x, params) + 1000.0))
        with caplog.at_level("INFO"):
            result = evaluate(tmp_path, data_dir, runs[1] / "checkpoints" / "last.ckpt",
                              "--marginal_likelihood.settings.num_datapoints=20", "--marginal_likelihood.settings.importance_samples=20",
                              config="figure3_n1000.yaml")
        (callback,) = [c for c in result.trainer.callbacks if isinstance(c, MarginalLikelihoodCallback)]
        assert set(callback.failures) == {"marginal_likelihood/test", "marginal_likelihood_importance/test"}
        assert not any(key.startswith("marginal_likelihood") for key in callback.results)
        assert not any(tag.startswith("marginal_likelihood") for tag in read_scalars(tmp_path))
        assert "HMC, Appendix D (50 samples) FAILED, not reported: above 0, the most the decoder allows" in caplog.text

