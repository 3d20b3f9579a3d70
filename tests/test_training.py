"""``python train.py`` end to end on the real data sets: learning, logging, resuming, errors."""

import itertools
import re

import pytest
import torch
import yaml
from google.protobuf import text_format
from tensorboard.backend.event_processing.event_accumulator import HISTOGRAMS, EventAccumulator
from tensorboard.plugins.custom_scalar.layout_pb2 import Layout
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
from tensorboard.util.tensor_util import make_ndarray
from torchvision.datasets import MNIST

from lit_vae import VAE
from lit_vae.cli import cli
from lit_vae.events import read_scalars
from tests.helpers import REPO, evaluate, fit, load, parameters, snapshot, train_process

# Whole runs through the CLI: the slow tier (pytest -m "not slow" leaves them out).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, data_dir):
    """500 steps of the paper's MNIST model: one epoch, ending on a point of the test-bound schedule."""
    tmp_path = tmp_path_factory.mktemp("mnist")
    fit(tmp_path, data_dir, "--trainer.max_steps=500")
    return tmp_path / "runs" / "mnist_nz20" / "version_0"


class TestFit:
    def test_mnist_lower_bound_rises(self, mnist_run):
        test = read_scalars(mnist_run)["lower_bound/test"]
        assert test[-1][1] > test[0][1] + 100  # ~ -540 at the start, ~ -200 after 500 steps
        # The first 100 minibatches (10^4 samples) only accumulate Adagrad's squared gradients.
        warmup = [value for step, value in test if step <= 10_000]
        after = [value for step, value in test if step >= 10_000]
        assert len(warmup) > 2 and len(set(warmup)) == 1
        assert all(b > a for a, b in itertools.pairwise(after))

    def test_frey_face_lower_bound_rises(self, tmp_path, data_dir):
        fit(tmp_path, data_dir, "--trainer.max_steps=400", config="frey_face.yaml")
        train = read_scalars(tmp_path / "runs" / "frey_face_nz10" / "version_0")["lower_bound/train"]
        assert len(train) == 400 // 16  # one point per epoch of 1,600 images
        assert train[-1][1] > train[0][1] + 100

    def test_events_step_is_samples_evaluated(self, mnist_run):
        scalars = read_scalars(mnist_run)
        assert scalars["lower_bound/train"][0][0] == 50_000  # the end of the first epoch
        # 1, 2, 5, 10, 20 and 50 samples fall in the first step (100 samples); 50,000 is the end.
        expected = [100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000]
        assert [step for step, _ in scalars["lower_bound/test"]] == expected
        assert "lower_bound/validation" not in scalars  # every 10 epochs: not yet

    def test_the_bound_is_its_two_terms_at_every_logged_step(self, mnist_run):
        """Eq. 7: lower bound = reconstruction - KL, per split, at the same steps (float32 events)."""
        scalars = read_scalars(mnist_run)
        for split in ("train", "test"):
            bound, kl, reconstruction = (scalars[f"{tag}/{split}"] for tag in ("lower_bound", "kl", "reconstruction"))
            assert [s for s, _ in bound] == [s for s, _ in kl] == [s for s, _ in reconstruction] and bound
            for (_, b), (_, k), (_, r) in zip(bound, kl, reconstruction):
                assert r - k == pytest.approx(b, abs=1e-4 * abs(b)) and k > 0

    def test_the_logged_terms_match_an_independent_computation(self, mnist_run, data_dir):
        """The last logged ``kl/test`` and ``reconstruction/test`` (50,000 samples, the run's end)
        against torch.distributions on the checkpoint's networks and torchvision's test images
        (grey levels as Bernoulli targets, Eq. 11, outside the support torch checks by default):
        the KL in closed form, E_q[log p(x|z)] by Monte Carlo with 20 draws per image."""
        scalars = read_scalars(mnist_run)
        assert scalars["kl/test"][-1][0] == scalars["reconstruction/test"][-1][0] == 50_000
        model = VAE.load_from_checkpoint(mnist_run / "checkpoints" / "last.ckpt", weights_only=True)
        x = MNIST(str(data_dir), train=False).data.reshape(-1, 784).float() / 255
        with torch.no_grad():
            mu, logvar = model.encoder(x)
            q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
            kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1).mean().item()
            z = mu + (0.5 * logvar).exp() * torch.randn(20, *mu.shape, generator=torch.Generator().manual_seed(0))
            probs = model.decode_mean(z)
            reconstruction = torch.distributions.Bernoulli(probs=probs, validate_args=False).log_prob(x).sum(-1).mean().item()
        assert scalars["kl/test"][-1][1] == pytest.approx(kl, rel=1e-4)
        # one draw per image over 10,000 images, against 20: Monte Carlo error well below 0.5 nats
        assert scalars["reconstruction/test"][-1][1] == pytest.approx(reconstruction, abs=0.5)
        units = scalars["latent/active_units"]
        assert [s for s, _ in units] == [s for s, _ in scalars["lower_bound/test"]]
        assert all(value == int(value) and 0 <= value <= 20 for _, value in units) and units[-1][1] > 0  # learning uses some
        # the KL per latent dimension, a histogram at the same steps whose 20 values sum to kl/test
        accumulator = EventAccumulator(str(mnist_run), size_guidance={HISTOGRAMS: 0})
        accumulator.Reload()
        histograms = accumulator.Histograms("latent/kl_per_dimension")
        assert [h.step for h in histograms] == [s for s, _ in scalars["kl/test"]]
        for h, (_, kl) in zip(histograms, scalars["kl/test"]):
            assert h.histogram_value.num == 20 and h.histogram_value.sum == pytest.approx(kl, rel=1e-4)

    def test_run_folder_holds_config_and_last_checkpoint(self, mnist_run):
        assert (mnist_run / "config.yaml").is_file()
        assert (mnist_run / "checkpoints" / "last.ckpt").is_file()

    def test_load_from_checkpoint_needs_no_arguments(self, mnist_run, data_dir):
        model = VAE.load_from_checkpoint(mnist_run / "checkpoints" / "last.ckpt")
        assert model.samples_evaluated == 50_000
        assert (model.hparams.latent_dim, model.hparams.hidden_dim, model.hparams.train_size) == (20, 500, 50_000)
        x = torch.rand(3, 784)
        assert model.lower_bound(x).shape == (3,) and model.sample(4).shape == (4, 784)

    def test_test_subcommand_reproduces_the_final_test_bound(self, mnist_run, tmp_path, data_dir):
        result = evaluate(tmp_path, data_dir, mnist_run / "checkpoints" / "last.ckpt",
                          "--marginal_likelihood.settings.num_datapoints=10", "--marginal_likelihood.settings.importance_samples=10")
        final = read_scalars(mnist_run)["lower_bound/test"][-1]
        assert result.trainer.callback_metrics["lower_bound/test"].item() == pytest.approx(final[1], abs=1e-3)
        assert read_scalars(tmp_path)["lower_bound/test"] == [(final[0], pytest.approx(final[1], abs=1e-3))]
        assert [step for step, _ in read_scalars(tmp_path)["marginal_likelihood_importance/test"]] == [final[0]]

    def test_trainer_test_returns_the_numbers_it_logs(self, mnist_run, tmp_path, data_dir, caplog):
        """Nz = 20: the importance estimate, and HMC reported as not applicable (Appendix D)."""
        checkpoint = mnist_run / "checkpoints" / "last.ckpt"
        with caplog.at_level("INFO"):
            built = evaluate(tmp_path, data_dir, checkpoint,
                             "--marginal_likelihood.settings.num_datapoints=10", "--marginal_likelihood.settings.importance_samples=10")
        assert re.search(r"log p\(x\) of the first 10 test points \(MNIST, grey levels\) at 50,000 samples .*: lower bound "
                         r"-[\d.]+ \+- [\d.]+ nats per datapoint; importance sampling \(10 samples\) -[\d.]+ \+- [\d.]+ nats per "
                         r"datapoint; HMC not applicable: latent_dim 20 > 4", caplog.text)
        returned, = built.trainer.test(built.model, datamodule=built.datamodule, ckpt_path=str(checkpoint))
        logged = read_scalars(tmp_path)
        tags = {"lower_bound/test", "kl/test", "reconstruction/test", "latent/active_units", "marginal_likelihood_importance/test",
                "marginal_likelihood_importance_standard_error/test"}
        assert set(returned) == tags | {"step"} and returned["step"] == 50_000
        for tag in tags:  # both runs (the CLI's, then ours) logged the same number at the checkpoint's samples
            assert logged[tag] == [(50_000, pytest.approx(returned[tag], abs=1e-4))] * 2


    def test_evaluating_a_checkpoint_logs_into_its_run(self, mnist_run, tmp_path, data_dir, monkeypatch):
        """No save_dir given: ``test`` logs into the run's ``test/`` at the checkpoint's samples,
        leaves every file of the run as it was, and opens no other run folder."""
        monkeypatch.chdir(tmp_path)
        before, curves = snapshot(mnist_run), read_scalars(mnist_run)
        cli(["test", "--config", str(REPO / "configs" / "mnist.yaml"), f"--data.init_args.data_dir={data_dir}",
             "--progress_bar.refresh_rate=0", f"--ckpt_path={mnist_run / 'checkpoints' / 'last.ckpt'}",
             "--marginal_likelihood.settings.num_datapoints=10", "--marginal_likelihood.settings.importance_samples=10"])
        after = snapshot(mnist_run)
        assert {name: after[name] for name in before} == before
        assert all(name.startswith("test/") for name in set(after) - set(before)) and set(after) != set(before)
        assert sorted(p.name for p in mnist_run.parent.iterdir()) == ["version_0"] and list(tmp_path.iterdir()) == []
        assert read_scalars(mnist_run) == curves  # the evaluation is not read as part of the training curves
        final = curves["lower_bound/test"][-1]
        assert read_scalars(mnist_run / "test")["lower_bound/test"] == [(final[0], pytest.approx(final[1], abs=1e-3))]

    def test_predict_writes_the_documented_file_and_a_projector_embedding(self, mnist_run, data_dir):
        checkpoint = mnist_run / "checkpoints" / "last.ckpt"
        cli(["predict", "--config", str(REPO / "configs" / "mnist.yaml"), f"--data.init_args.data_dir={data_dir}",
             "--progress_bar.refresh_rate=0", f"--ckpt_path={checkpoint}"])
        folder = mnist_run / "predict"
        written = torch.load(folder / "predictions_test.pt", weights_only=True)
        assert written["split"] == "test" and written["samples_evaluated"] == 50_000
        assert written["mu"].shape == written["logvar"].shape == (10_000, 20)
        assert written["reconstruction"].shape == (10_000, 784) and written["lower_bound"].shape == (10_000,)
        assert torch.equal(written["index"], torch.arange(10_000))
        assert torch.equal(written["labels"], MNIST(str(data_dir), train=False).targets)
        model = VAE.load_from_checkpoint(checkpoint).eval()
        x = MNIST(str(data_dir), train=False).data[:200].reshape(200, -1).float() / 255
        with torch.no_grad():
            mu, logvar = model.encode(x)
            torch.testing.assert_close(written["mu"][:200], mu)
            torch.testing.assert_close(written["logvar"][:200], logvar)
            torch.testing.assert_close(written["reconstruction"][:200], model.decode_mean(mu))
        final = read_scalars(mnist_run)["lower_bound/test"][-1][1]
        assert written["lower_bound"].mean().item() == pytest.approx(final, abs=1e-3)  # test's noise, test's number
        # The Projector tab's files, as its plugin reads them
        config = text_format.Parse((folder / "projector_config.pbtxt").read_text(), ProjectorConfig())
        embedding, = config.embeddings
        assert embedding.tensor_name.startswith("latent_mu") and list(embedding.sprite.single_image_dim) == [28, 28]
        rows = (folder / embedding.tensor_path).read_text().splitlines()
        assert len(rows) == 10_000 and len(rows[0].split("\t")) == 20
        labels = (folder / embedding.metadata_path).read_text().splitlines()
        assert labels[:5] == [str(d) for d in written["labels"][:5].tolist()] and len(labels) == 10_000
        assert (folder / embedding.sprite.image_path).stat().st_size > 0

    def test_predict_of_a_model_without_an_encoder_is_one_line(self, tmp_path, data_dir, monkeypatch, capsys):
        monkeypatch.chdir(tmp_path)
        with pytest.raises(SystemExit):
            cli(["predict", "--config", str(REPO / "configs" / "mnist.yaml"), f"--data.init_args.data_dir={data_dir}", "--model=MCEM"])
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "MCEM has no encoder: evaluate it with `test`" in lines[0], lines


def test_a_fit_ending_off_the_schedule_logs_and_summarises_its_final_test_bound(tmp_path, data_dir, caplog):
    """130 steps end at 13,000 samples, between the schedule's 10,000 and 20,000: the final test
    bound is in the event files (for TensorBoard and its HPARAMS tab) and is the one number the
    console prints for it, in the end-of-fit line and in the summary."""
    with caplog.at_level("INFO"):
        fit(tmp_path, data_dir, "--model.init_args.hidden_dim=50", "--trainer.max_steps=130")
    step, value = read_scalars(tmp_path / "runs" / "mnist_nz20" / "version_0")["lower_bound/test"][-1]
    assert step == 13_000
    printed = re.findall(r"lower_bound/test(?: = |:\s+)(-[\d.]+) nats per datapoint", caplog.text)
    assert len(printed) == 2 and printed[0] == printed[1] and float(printed[0]) == pytest.approx(value, abs=0.006), printed


class TestResume:
    ARGS = ("--model.init_args.hidden_dim=50", "--checkpoint.every_n_train_steps=100")

    @pytest.mark.parametrize("stop", [250, 500], ids=["mid-epoch", "epoch-end"])
    def test_stop_and_resume_equals_uninterrupted(self, tmp_path, data_dir, stop):
        fit(tmp_path / "whole", data_dir, *self.ARGS, "--trainer.max_steps=700")
        fit(tmp_path / "parts", data_dir, *self.ARGS, f"--trainer.max_steps={stop}")
        last = tmp_path / "parts" / "runs" / "mnist_nz20" / "version_0" / "checkpoints" / "last.ckpt"
        assert torch.load(last, weights_only=True)["global_step"] == stop  # the final state, also off the every-100 grid
        # The end of the fit is logged (25,000 samples is off the schedule's 20,000 and 50,000)
        ended = read_scalars(last.parent.parent)
        assert ended["lower_bound/test"][-1][0] == ended["kl/test"][-1][0] == stop * 100
        fit(tmp_path / "parts", data_dir, *self.ARGS, "--trainer.max_steps=700", "--ckpt_path=last")
        whole = tmp_path / "whole" / "runs" / "mnist_nz20" / "version_0"
        parts = tmp_path / "parts" / "runs" / "mnist_nz20"
        assert [p.name for p in parts.iterdir()] == ["version_0"]  # the resumed run logs into its folder
        parts = parts / "version_0"
        a, b = parameters(whole / "checkpoints" / "last.ckpt"), parameters(parts / "checkpoints" / "last.ckpt")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        # the same curves, each point once: the resume removed the stop's end-of-fit point
        assert read_scalars(parts) == read_scalars(whole)
        assert sorted(p.name for p in parts.glob("config*.yaml")) == ["config.resume-1.yaml", "config.yaml"]

    def test_resume_with_a_relative_save_dir_keeps_one_last_checkpoint(self, tmp_path, data_dir, monkeypatch):
        """A resumed run overwrites last.ckpt; were the folder spelled differently than in the
        checkpoint, Lightning would write last-v1.ckpt and the next resume would take the stale one."""
        monkeypatch.chdir(tmp_path)
        args = (*self.ARGS, "--trainer.logger.init_args.save_dir=runs", "--progress_bar.refresh_rate=0")
        config = str(REPO / "configs" / "mnist.yaml")
        cli(["fit", "--config", config, f"--data.init_args.data_dir={data_dir}", *args, "--trainer.max_steps=100"])
        cli(["fit", "--config", config, f"--data.init_args.data_dir={data_dir}", *args, "--trainer.max_steps=200",
             "--ckpt_path=last"])
        folder = tmp_path / "runs" / "mnist_nz20" / "version_0" / "checkpoints"
        assert sorted(p.name for p in folder.iterdir()) == ["epoch=0-step=200.ckpt", "last.ckpt"]
        assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 200

    def test_resume_from_a_file_logs_into_its_run(self, tmp_path, data_dir):
        fit(tmp_path, data_dir, *self.ARGS, "--trainer.max_steps=50")
        checkpoint = tmp_path / "runs" / "mnist_nz20" / "version_0" / "checkpoints" / "last.ckpt"
        # run from another save_dir: the checkpoint's own run folder still wins
        fit(tmp_path / "elsewhere", data_dir, *self.ARGS, "--trainer.max_steps=100", f"--ckpt_path={checkpoint}")
        assert not (tmp_path / "elsewhere" / "runs").exists()
        assert read_scalars(checkpoint.parent.parent)["lower_bound/test"][-1][0] == 10_000

    def test_nothing_to_resume_is_a_clear_error(self, tmp_path, data_dir, capsys):
        with pytest.raises(SystemExit):
            fit(tmp_path, data_dir, "--ckpt_path=last")
        assert re.search(r"no run under .*mnist_nz20 to resume", capsys.readouterr().err)
        assert not (tmp_path / "runs").exists()


class TestCommandLine:
    @pytest.mark.parametrize(("argument", "message"), [
        ("--model.init_args.latent_dim=0", "latent_dim must be positive"),
        ("--model.latent_dim=-3", "latent_dim must be positive"),
        ("--model.init_args.learning_rate=-0.02", "learning_rate must be positive"),
        ("--model.init_args.estimator=C", "estimator"),
        ("--model.init_args.no_such_option=1", "no_such_option"),
        ("--data.init_args.binarize=sometimes", "binarize"),
        ("--model.train_size=1000", "--model.init_args.train_size is set from the data, which would override it: "
                                    "give --data.init_args.train_size instead"),
        ("--model=MCEM --marginal_likelihood.hmc=never", "--marginal_likelihood.hmc never: MCEM has no encoder"),
        ("--optimizer=Adam", "--optimizer would replace the paper's Adagrad and its accumulate-only warm-up "
                             "(configure_optimizers); add --allow_other_optimizer true to do that"),
    ])
    def test_invalid_values_fail_before_anything_is_written(self, tmp_path, data_dir, argument, message, monkeypatch, capsys):
        monkeypatch.chdir(tmp_path)  # where the default run folder would go
        with pytest.raises(SystemExit) as stopped:
            cli(["fit", "--config", str(REPO / "configs" / "mnist.yaml"), f"--data.init_args.data_dir={data_dir}", *argument.split()])
        assert stopped.value.code == 2
        assert message in capsys.readouterr().err
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize(("arguments", "line"), [
        (["--model.latnt_dim=3"], "error: VAE has no option latnt_dim (did you mean --model.init_args.latent_dim"),
        (["--model", "WakeSleep", "--model.init_args.hiden_dim=3"],
         "error: WakeSleep has no option hiden_dim (did you mean --model.init_args.hidden_dim"),
        (["--trainer.max_stpes=5"], "error: no option --trainer.max_stpes (did you mean --trainer.max_steps"),
        (["--model.init_args.estimator=C"], "error: --model.init_args.estimator: Expected a typing.Literal['A', 'B', 'iwae']"),
    ])
    def test_a_mistake_is_one_line_that_names_what_was_meant(self, tmp_path, data_dir, arguments, line, monkeypatch, capsys):
        monkeypatch.chdir(tmp_path)
        with pytest.raises(SystemExit):
            cli(["fit", "--config", str(REPO / "configs" / "mnist.yaml"), f"--data.init_args.data_dir={data_dir}", *arguments])
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(line), lines

    def test_a_run_without_a_seed_uses_and_records_the_default_one(self, tmp_path, data_dir, recwarn):
        cli(["fit", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", f"--data.init_args.data_dir={data_dir}",
             "--trainer.max_steps=1", "--model.init_args.hidden_dim=10", "--marginal_likelihood.during_fit=false",
             "--progress_bar.refresh_rate=0", "--trainer.enable_model_summary=false"])
        assert not [w for w in recwarn if "No seed found" in str(w.message)]
        (config,) = (tmp_path / "runs").rglob("config.yaml")
        assert yaml.safe_load(config.read_text())["seed_everything"] == 0
        # ... and in the HPARAMS tab, beside the run's settings, with no point added at step 0
        accumulator = EventAccumulator(str(config.parent))
        accumulator.Reload()
        content = accumulator.PluginTagToContent("hparams")
        start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info.hparams
        assert (start["seed"].number_value, start["latent_dim"].number_value, start["model"].string_value) == (0, 20, "VAE")
        experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
        assert [info.name.tag for info in experiment.metric_infos][:2] == ["lower_bound/train", "lower_bound/test"]
        scalars = read_scalars(config.parent)
        assert scalars and all(step > 0 for points in scalars.values() for step, _ in points)
        # and the Custom Scalars tab overlays each quantity's splits
        (event,) = accumulator.Tensors("custom_scalars__config__")
        layout = Layout.FromString(make_ndarray(event.tensor_proto).item())
        charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}
        assert charts["lower bound"][:2] == ["lower_bound/train", "lower_bound/test"]
        assert charts["KL(q(z|x) || p(z))"] == ["kl/train", "kl/test"]

    @pytest.mark.parametrize("flag", ["enable_progress_bar=false", "enable_checkpointing=false", "rich_progress_bar",
                                      "default_root_dir", "logger=false"])
    def test_standard_trainer_flags(self, tmp_path, data_dir, flag, monkeypatch, caplog):
        """Each flag as in any Lightning project: a short Frey Face fit in a fresh working folder."""
        from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

        monkeypatch.chdir(tmp_path)
        argument = {"rich_progress_bar": "--trainer.callbacks+=lightning.pytorch.callbacks.RichProgressBar",
                    "default_root_dir": f"--trainer.default_root_dir={tmp_path / 'elsewhere'}"}.get(flag, f"--trainer.{flag}")
        with caplog.at_level("INFO"):
            trainer = cli(["fit", "--config", str(REPO / "configs" / "frey_face.yaml"), f"--data.init_args.data_dir={data_dir}",
                           "--trainer.max_steps=20", "--model.init_args.hidden_dim=10", "--marginal_likelihood.during_fit=false",
                           "--trainer.enable_model_summary=false", argument]).trainer
        assert trainer.global_step == 20
        run = tmp_path / ("elsewhere" if flag == "default_root_dir" else "runs") / "frey_face_nz10" / "version_0"
        if flag == "enable_progress_bar=false":
            assert trainer.progress_bar_callback is None
        elif flag == "rich_progress_bar":
            assert isinstance(trainer.progress_bar_callback, RichProgressBar)
        if flag == "enable_checkpointing=false":
            assert not any(isinstance(c, ModelCheckpoint) for c in trainer.callbacks)
            assert not (run / "checkpoints").exists()
            assert "this run saves no checkpoint, so it cannot be resumed" in caplog.text
        elif flag == "logger=false":  # Lightning's default_root_dir, the working folder, holds the checkpoints
            assert trainer.logger is None and not (tmp_path / "runs").exists()
            assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
        else:
            assert (run / "checkpoints" / "last.ckpt").is_file() and any(run.glob("events.out.tfevents.*"))
        if flag == "default_root_dir":
            assert not (tmp_path / "runs").exists()

    def test_console_says_what_happened_and_nothing_that_does_not_apply(self, tmp_path, data_dir, capfd, recwarn, caplog):
        """A fit names its run folder at the start and sums up at the end; Lightning's litlogger
        tip, Frey Face's short-epoch logging and missing-validation warnings, Lightning's internal
        deprecation, and on a resume the checkpoint folder's 'exists and is not empty' are not
        printed."""
        with caplog.at_level("INFO"):
            for extra in ([], ["--trainer.max_steps=40", "--ckpt_path=last"]):
                fit(tmp_path, data_dir, "--trainer.max_steps=20", "--model.init_args.hidden_dim=10",
                    "--marginal_likelihood.during_fit=false", *extra, config="frey_face.yaml")
        assert "lower_bound/test" in caplog.text  # what the CLI says still reaches the log
        run = tmp_path / "runs" / "frey_face_nz10"
        assert [p.name for p in run.iterdir()] == ["version_0"]  # the second fit resumed the first
        assert load(run / "version_0" / "checkpoints" / "last.ckpt")["global_step"] == 40
        assert caplog.text.count(f"run folder: {run / 'version_0'}") == 2
        assert f"last checkpoint:   {run / 'version_0' / 'checkpoints' / 'last.ckpt'}" in caplog.text
        assert "samples evaluated: 2,000 (" in caplog.text and "samples evaluated: 4,000 (" in caplog.text
        assert re.search(r"lower_bound/test: +-?\d+\.\d\d nats per datapoint", caplog.text)
        printed = capfd.readouterr()
        messages = printed.out + printed.err + caplog.text + "".join(str(w.message) for w in recwarn)
        for noise in ("Tip:", "smaller than the logging interval", "exists and is not empty", "have no `val_dataloader`",
                      "LeafSpec", "`weights_only` was not set"):
            assert noise not in messages

    def test_model_summary_without_a_column_of_zero_flops(self, tmp_path, data_dir, caplog):
        with caplog.at_level("INFO"):
            cli(["fit", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", f"--data.init_args.data_dir={data_dir}",
                 "--trainer.max_steps=1", "--model.init_args.hidden_dim=10", "--progress_bar.refresh_rate=0"])
        assert re.search(r"0 \| encoder +\| GaussianMLPEncoder +\| 8\.3 K +\| train", caplog.text)  # 784 x 10 + 10 + 2 x 220
        assert "trainable params" in caplog.text and "FLOPs" not in caplog.text
        assert "model summary" not in caplog.text  # Lightning's note that it skips its own

    def test_help_describes_the_tool_and_its_models(self, capsys):
        for args in (["--help"], ["fit", "--help"]):
            with pytest.raises(SystemExit):
                cli(args)
            text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
            assert "Auto-Encoding Variational Bayes" in text and "Lightning Trainer command line tool" not in text
            assert all(name in text for name in ("VAE", "WakeSleep", "MCEM", "mnist,", "frey_face,", "figure3_n50000_mcem"))
            assert text.startswith("usage: lit-vae ")  # whichever way it was started (python -m lit_vae: __main__.py)

    def test_another_optimizer_with_the_explicit_flag(self, tmp_path, data_dir):
        trainer = cli(["fit", "--config", str(REPO / "configs" / "frey_face.yaml"), f"--data.init_args.data_dir={data_dir}",
                       f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.max_steps=2", "--model.init_args.hidden_dim=10",
                       "--marginal_likelihood.during_fit=false", "--optimizer=Adam", "--allow_other_optimizer=true"]).trainer
        assert type(trainer.optimizers[0]).__name__ == "Adam"

    def test_print_config(self, tmp_path):
        result = train_process("fit", "--model.latent_dim=2", "--print_config", config="frey_face.yaml", cwd=tmp_path, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "latent_dim: 2" in result.stdout and "FreyFaceDataModule" in result.stdout
        assert "accelerator: cpu" in result.stdout


@pytest.mark.xdist_group("ddp")  # never beside another DDP run (see pyproject.toml)
class TestDistributed:
    def test_ddp_lower_bound_is_within_noise_of_one_process(self, tmp_path, data_dir):
        """2 processes x 50 datapoints a step against 1 x 100, same seed, 2 x 10^5 samples each.

        Rank r takes every other index of the epoch's permutation, so the two ranks' minibatches
        together are the single process's minibatch, and DDP averages their gradients: the runs
        differ only in the reparameterisation noise (drawn per rank). Noise, measured with this
        setting over seeds 1-6: the single-process test bound at 2 x 10^5 samples has a
        seed-to-seed standard deviation of 5.0 nats (range 14.3), and DDP minus single process
        ranged from -1.3 to +8.3 nats; hence the tolerance of 15 nats, about 3 standard
        deviations. Learning at half the speed (the bound of 10^5 samples) would be 16-17 nats
        lower; a bound summed instead of averaged over the ranks, hundreds of nats."""
        common = ("--model.init_args.hidden_dim=100", "--trainer.max_steps=2000")
        result = train_process("fit", f"--data.init_args.data_dir={data_dir}", "--trainer.strategy=ddp", "--trainer.devices=2",
                               "--data.init_args.batch_size=50", "--progress_bar.refresh_rate=0", *common, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        fit(tmp_path / "single", data_dir, *common)
        ddp = read_scalars(tmp_path / "runs" / "mnist_nz20" / "version_0")
        single = read_scalars(tmp_path / "single" / "runs" / "mnist_nz20" / "version_0")
        for tag in ("lower_bound/train", "lower_bound/test"):
            assert [step for step, _ in ddp[tag]] == [step for step, _ in single[tag]]  # the same x axis
            late = [(a, b) for (step, a), (_, b) in zip(ddp[tag], single[tag]) if step >= 100_000]
            assert late and all(abs(a - b) < 15 for a, b in late), (tag, late)

    def test_two_process_ddp_on_cpu(self, tmp_path, data_dir):
        result = train_process(
            "fit", f"--data.init_args.data_dir={data_dir}", "--trainer.strategy=ddp", "--trainer.devices=2",
            "--trainer.max_steps=300", "--model.init_args.hidden_dim=50", "--progress_bar.refresh_rate=0",
            # the marginal likelihood too, its points sharded over the ranks
            "--model.init_args.latent_dim=3", "--marginal_likelihood.during_fit=true", "--marginal_likelihood.start=50000",
            "--marginal_likelihood.settings.num_datapoints=41", "--marginal_likelihood.settings.importance_samples=20",
            "--marginal_likelihood.settings.num_samples=20", "--marginal_likelihood.settings.burn_in=10", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        runs = list((tmp_path / "runs" / "mnist_nz3").iterdir())
        assert len(runs) == 1  # one run folder, written once
        scalars = read_scalars(runs[0])
        # each step evaluates 2 x 100 samples: an epoch of 50,000 is 250 steps
        assert [s for s, _ in scalars["lower_bound/train"]] == [50_000]
        test = [s for s, _ in scalars["lower_bound/test"]]
        assert test[-2:] == [50_000, 60_000] and len(list(runs[0].glob("*.end_of_fit"))) == 1  # the off-schedule end, once
        assert scalars["lower_bound/test"][-1][1] > scalars["lower_bound/test"][0][1] + 100
        assert VAE.load_from_checkpoint(runs[0] / "checkpoints" / "last.ckpt").samples_evaluated == 60_000
        for tag in ("marginal_likelihood/train", "marginal_likelihood_importance/test"):
            assert [s for s, _ in scalars[tag]] == [50_000]
        assert result.stderr.count("log p(x) of the first 41 test points") == 1  # printed once (rank zero) per evaluation
        # pictures drawn once, by rank zero, at the end as well
        assert sorted(path.name for path in (runs[0] / "images").iterdir()) == [
            "manifold_60000.png", "reconstructions_60000.png", "samples_60000.png"]


@pytest.mark.slow
def test_trains_on_the_importance_weighted_bound(tmp_path, data_dir):
    """--model.init_args.estimator iwae with k = 5 trains on L_5 (Burda et al. 2015): its curves
    are finite and rising; lower_bound/* is the ELBO (L^A) and iwae_bound/test is L_5 on the same
    draws, never below it (Jensen's inequality, point by point); the checkpoint names the estimator."""
    fit(tmp_path, data_dir, "--model.init_args.estimator=iwae", "--model.init_args.num_samples=5", "--model.init_args.hidden_dim=50",
        "--data.init_args.train_size=1000", "--trainer.max_steps=200", "--images.num_samples=4", "--images.num_reconstructions=0",
        "--images.manifold_size=2")
    run = tmp_path / "runs" / "mnist_nz20" / "version_0"
    curves = read_scalars(run)
    train, test = curves["lower_bound/train"], curves["lower_bound/test"]
    assert all(torch.isfinite(torch.tensor(value)) for _, value in train + test)
    assert train[-1][1] > train[0][1] + 50 and test[-1][1] > test[0][1] + 50
    iwae = dict(curves["iwae_bound/test"])
    assert sorted(iwae) == [step for step, _ in test] and all(iwae[step] > value for step, value in test)
    assert load(run / "checkpoints" / "last.ckpt")["hyper_parameters"]["estimator"] == "iwae"
