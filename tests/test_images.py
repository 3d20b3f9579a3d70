"""Pictures of the model (Appendix A, Figure 5, reconstructions) and paper-style figures drawn
from the event files of real runs."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import norm
from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

from lit_vae import VAE
from lit_vae.callbacks import ImagesCallback
from lit_vae.callbacks.images import manifold_points
from lit_vae.datamodules import FreyFaceDataModule, MNISTDataModule
from lit_vae.figures import Run, draw, find_runs, panel_title, paper_curves
from lit_vae.figures import main as figures
from lit_vae.logging import END_OF_FIT_SUFFIX
from tests.helpers import fit

TAGS = ("images/manifold", "images/reconstructions", "images/samples")


class TestManifoldPoints:
    def test_are_the_inverse_normal_cdf_of_an_even_grid(self):
        n = 7
        axis = norm.ppf((np.arange(n) + 0.5) / n)
        z = manifold_points(n, 2).view(n, n, 2).double()  # [row, column, Nz]
        torch.testing.assert_close(z[..., 0], torch.from_numpy(axis).expand(n, n))         # z_0 varies along a row
        torch.testing.assert_close(z[..., 1], torch.from_numpy(axis)[:, None].expand(n, n))  # z_1 down a column

    def test_spans_the_chosen_dimensions_with_the_rest_at_zero(self):
        z = manifold_points(4, 5, dims=(3, 1))
        torch.testing.assert_close(z[:, 3], manifold_points(4, 2)[:, 0])
        torch.testing.assert_close(z[:, 1], manifold_points(4, 2)[:, 1])
        assert (z[:, [0, 2, 4]] == 0).all()

    def test_one_latent_dimension_gives_one_row(self):
        torch.testing.assert_close(manifold_points(5, 1)[:, 0], manifold_points(5, 2)[:5, 0])

    @pytest.mark.parametrize("dims", [(0, 0), (0, 2), (0,)])
    def test_bad_dimensions_are_refused(self, dims):
        with pytest.raises(ValueError, match="manifold_dims must be two different latent dimensions in \\[0, 2\\)"):
            manifold_points(3, 2, dims)


@pytest.fixture(params=["mnist", "frey_face"])
def drawn(request, data_dir, tmp_path):
    """A random model, the callback set up on its data module, and what it draws."""
    torch.manual_seed(0)
    if request.param == "mnist":
        data, size, model = MNISTDataModule(data_dir, download=False), 20, VAE(input_dim=784, latent_dim=2, hidden_dim=30)
    else:
        data, size = FreyFaceDataModule(data_dir, download=False), 10
        model = VAE(input_dim=560, latent_dim=2, hidden_dim=30, likelihood="gaussian")
    callback = ImagesCallback(manifold_size=size)
    callback.setup(SimpleNamespace(datamodule=data, loggers=[], default_root_dir=str(tmp_path)), model, "fit")
    return data, model, callback, callback.draw(model)


class TestSpannedDims:
    def test_the_two_most_active_by_default(self, data_dir, tmp_path):
        """An encoder whose mean moves with x only in dimensions 3 and 1 of 5: the grid spans them."""
        torch.manual_seed(0)
        data, model = MNISTDataModule(data_dir, download=False), VAE(input_dim=784, latent_dim=5, hidden_dim=30)
        with torch.no_grad():
            model.encoder.mu.weight.zero_()
            model.encoder.mu.weight[[1, 3]] = torch.randn(2, 30)
        callback = ImagesCallback(manifold_size=4)
        callback.setup(SimpleNamespace(datamodule=data, loggers=[], default_root_dir=str(tmp_path)), model, "fit")
        assert callback.spanned_dims(model) == (1, 3)
        means = model.decode_mean(manifold_points(4, 5, (1, 3))).detach()
        torch.testing.assert_close(callback.draw(model)["manifold"][0, :28, 28:56], means[1].view(28, 28))
        assert ImagesCallback(manifold_dims=(0, 4)).spanned_dims(model) == (0, 4)


class TestDraw:
    def test_shapes_follow_the_image_shape(self, drawn):
        data, _, callback, images = drawn
        h, w = data.image_shape
        n = callback.manifold_size
        assert images["manifold"].shape == (3, n * h, n * w)  # no padding, as in Figure 4
        # 10 x 10 tiles with 2-pixel padding: 100 samples; 5 pairs of rows of 10 reconstructions.
        assert images["samples"].shape == images["reconstructions"].shape == (3, 10 * (h + 2) + 2, 10 * (w + 2) + 2)
        for image in images.values():
            assert image.dtype == torch.float32 and image.min() >= 0 and image.max() <= 1

    def test_manifold_tiles_are_decoder_means_on_the_grid(self, drawn):
        data, model, callback, images = drawn
        h, w = data.image_shape
        n = callback.manifold_size
        means = model.decode_mean(manifold_points(n, 2)).detach()
        row, column = n - 1, 1
        tile = images["manifold"][0, row * h:(row + 1) * h, column * w:(column + 1) * w]
        torch.testing.assert_close(tile, means[row * n + column].view(h, w))

    def test_reconstructions_pair_test_images_with_their_reconstructions(self, drawn):
        data, model, _, images = drawn
        h, w = data.image_shape
        x = data.splits["test"][:10]
        reconstruction = model.decode_mean(model.encode(x)[0]).detach()

        def tile(row, column):
            top, left = 2 + row * (h + 2), 2 + column * (w + 2)
            return images["reconstructions"][0, top:top + h, left:left + w]

        for column in (0, 9):
            torch.testing.assert_close(tile(0, column), x[column].view(h, w))
            torch.testing.assert_close(tile(1, column), reconstruction[column].view(h, w))

    def test_leaves_the_rng_and_the_mode_alone(self, drawn):
        _, model, callback, images = drawn
        model.train()
        state = torch.get_rng_state()
        again = callback.draw(model)
        assert torch.equal(torch.get_rng_state(), state) and model.training
        assert all(torch.equal(again[name], images[name]) for name in images)  # the same prior draws every time


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    """30 steps (3,000 samples) of a small MNIST model with Nz = 2."""
    tmp = tmp_path_factory.mktemp("images")
    fit(tmp, data_dir, "--model.init_args.latent_dim=2", "--model.init_args.hidden_dim=50",
        "--model.init_args.adagrad_warmup_batches=0", "--trainer.max_steps=30")
    return tmp / "runs" / "mnist_nz2" / "version_0"


@pytest.mark.slow
class TestDuringFit:
    def test_event_files_hold_the_three_images_at_the_schedule(self, run):
        (file,) = (path for path in run.glob("events.out.tfevents.*") if not path.name.endswith(END_OF_FIT_SUFFIX))
        events = EventAccumulator(str(file), size_guidance={IMAGES: 0})
        events.Reload()
        assert sorted(events.Tags()[IMAGES]) == list(TAGS)
        # 1 to 50 samples fall in the first step (100 samples); the end of training, 3,000, is off
        # the schedule: its pictures are saved as files, not logged.
        points = [100, 200, 500, 1_000, 2_000]
        for tag in TAGS:
            assert [event.step for event in events.Images(tag)] == points
        manifold = events.Images("images/manifold")[-1]
        assert (manifold.height, manifold.width) == (20 * 28, 20 * 28)

    def test_final_pictures_are_saved_in_the_run_folder(self, run):
        with Image.open(run / "images" / "manifold_3000.png") as manifold:
            assert manifold.size == (20 * 28, 20 * 28)
        assert {path.name for path in (run / "images").iterdir()} == {f"{tag[7:]}_3000.png" for tag in TAGS}


@pytest.mark.slow
class TestSettings:
    def test_dimensions_the_model_lacks_fail_before_anything_is_written(self, tmp_path, data_dir, capsys):
        with pytest.raises(SystemExit) as exit_:
            fit(tmp_path, data_dir, "--model.init_args.latent_dim=2", "--images.manifold_dims=[0, 5]")
        assert exit_.value.code == 2
        assert "--images.manifold_dims must be two different latent dimensions in [0, 2), got [0, 5]" in capsys.readouterr().err
        assert list(tmp_path.iterdir()) == []


class TestShortRuns:
    def test_a_run_shorter_than_the_papers_axis_is_drawn_from_its_first_point(self, tmp_path):
        run = Run(tmp_path, "MNIST", "AEVB", 20, 50_000, {"lower_bound/train": [(100, -540.0), (20_000, -200.0)]})
        out = draw([run], 2, tmp_path / "figure2.png", paper=True)
        with Image.open(out) as image:
            assert image.format == "PNG"

    def test_a_panel_ending_before_the_papers_readings_says_so(self):
        assert panel_title("MNIST, Nz = 20", 20_000) == (
            "MNIST, Nz = 20\n(ends at 20,000 samples; the paper's readings begin at $10^6$)")
        assert panel_title("MNIST, Nz = 20", 1_000_000) == "MNIST, Nz = 20"


def test_a_runs_evaluation_folders_are_not_runs_of_their_own(tmp_path):
    """``test``, ``validate`` and ``predict`` of a checkpoint log into ``version_<n>/<subcommand>``:
    the figures tool finds the run once, and such a folder only when it is named itself."""
    run = tmp_path / "mnist_nz20" / "version_0"
    for folder in (run, run / "test", run / "predict"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "events.out.tfevents.1.host.1.0").write_bytes(b"")
    assert find_runs([tmp_path]) == [run]
    assert find_runs([run / "test"]) == [run / "test"]


@pytest.mark.slow
class TestFigures:
    def test_draws_a_png_from_a_real_run(self, run, tmp_path, capsys):
        out = tmp_path / "figure2.png"
        figures([str(run.parent), "--out", str(out), "--start", "0", "--paper"])
        with Image.open(out) as image:
            assert image.format == "PNG" and min(image.size) > 200
        assert "from 1 run(s)" in capsys.readouterr().out

    def test_refuses_a_folder_without_event_files(self, tmp_path, capsys):
        (tmp_path / "empty").mkdir()
        with pytest.raises(SystemExit):
            figures([str(tmp_path / "empty"), "--out", str(tmp_path / "figure.png")])
        assert f"no TensorBoard event files under {tmp_path / 'empty'}" in capsys.readouterr().err
        assert not (tmp_path / "figure.png").exists()

    def test_refuses_runs_without_the_figures_tags(self, run, tmp_path):
        with pytest.raises(SystemExit, match="none of the runs logged marginal_likelihood/train or marginal_likelihood/test,"):
            figures([str(run), "--figure", "3", "--start", "0", "--out", str(tmp_path / "figure3.png")])
        assert not (tmp_path / "figure3.png").exists()

    def test_paper_values_sit_in_the_paper_panels(self):
        figure2, figure3 = paper_curves(2), paper_curves(3)
        assert {panel[1] for panel, _, _ in figure2} == {f"MNIST, $N_z$ = {n}" for n in (3, 5, 10, 20, 200)} | {
            f"Frey Face, $N_z$ = {n}" for n in (2, 5, 10, 20)}  # every panel of the paper's Figure 2
        assert {panel[1] for panel, _, _ in figure3} == {f"MNIST, $N_z$ = 3, $N_{{train}}$ = {n:,}" for n in (1000, 50000)}
        assert {method for _, method, _ in figure3} == {"AEVB", "MCEM", "wake-sleep"}
        for curves in (figure2, figure3):
            for points in curves.values():
                assert [s for s, _ in points] == sorted(s for s, _ in points)
