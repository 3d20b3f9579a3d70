"""Your own data (``ArrayDataModule``): what each kind of file gives, the refusals of what it
cannot read, and a fit, test and predict on it through the command line."""

import numpy as np
import pytest
import torch
from PIL import Image

from lit_vae.cli import cli
from lit_vae.datamodules import ArrayDataModule


def pixels(n=20, rows=6, columns=4):
    return torch.randint(0, 256, (n, rows, columns), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_a_npy_of_8_bit_images_is_divided_by_255_and_split_by_its_seed(tmp_path):
    images = pixels()
    np.save(tmp_path / "x.npy", images.numpy())
    data = ArrayDataModule(str(tmp_path / "x.npy"), test_size=5, split_seed=3)
    data.setup()
    order = torch.randperm(20, generator=torch.Generator().manual_seed(3))
    expected = images.reshape(20, -1).float()[order] / 255
    torch.testing.assert_close(torch.cat([data.splits["train"], data.splits["test"]]), expected)
    assert (data.train_size, len(data.splits["test"]), data.image_shape, data.input_dim) == (15, 5, (6, 4), 24)


def test_a_pt_tensor_of_rows_is_kept_and_drawn_as_the_shape_asked(tmp_path):
    rows = torch.rand(30, 12, generator=torch.Generator().manual_seed(1))
    torch.save(rows, tmp_path / "x.pt")
    data = ArrayDataModule(str(tmp_path / "x.pt"), test_size=10, image_shape=(3, 4))
    data.setup()
    assert data.image_shape == (3, 4) and data.train_size == 20
    assert sorted(torch.cat([data.splits["train"], data.splits["test"]]).sum(1).tolist()) == sorted(rows.sum(1).tolist())


def test_a_folder_of_images_is_read_in_grey_levels_in_name_order(tmp_path):
    images = pixels(n=4)
    for i, image in enumerate(images):
        Image.fromarray(image.numpy()).save(tmp_path / f"{i:02d}.png")
    data = ArrayDataModule(str(tmp_path), test_size=1, split_seed=0)
    order = torch.randperm(4, generator=torch.Generator().manual_seed(0))
    data.setup()
    torch.testing.assert_close(torch.cat([data.splits["train"], data.splits["test"]]), images.reshape(4, -1).float()[order] / 255)


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: np.save(p / "x.npy", np.array([{"a": 1}, {"b": 2}], dtype=object)), "not a numeric .npy array"),
    (lambda p: torch.save({"x": torch.zeros(3, 4)}, p / "x.pt"), "holds a dict, not one tensor"),
    (lambda p: np.save(p / "x.npy", np.full((5, 4), 2.0)), r"values must lie in \[0, 1\]"),
    (lambda p: np.save(p / "x.npy", np.zeros((5, 2, 3, 4))), r"shape \(5, 2, 3, 4\)"),
    (lambda p: (p / "x.csv").write_text("1,2\n"), "not a .npy or .pt file or a folder of images"),
    (lambda p: (p / "empty").mkdir(), "no .png, .jpg, .jpeg images in this folder"),
])
def test_what_cannot_be_read_is_one_clear_error(tmp_path, make, message):
    make(tmp_path)
    (path,) = [p for p in tmp_path.iterdir()]
    with pytest.raises(ValueError, match=message):
        ArrayDataModule(str(path), test_size=1)


def test_a_missing_path_and_a_test_split_too_large_are_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder"):
        ArrayDataModule(str(tmp_path / "x.npy"))
    np.save(tmp_path / "x.npy", pixels().numpy())
    with pytest.raises(ValueError, match=r"test_size must be between 1 and 19 \(the data has 20 points\), got 20"):
        ArrayDataModule(str(tmp_path / "x.npy"), test_size=20)


def test_a_pickle_in_a_pt_file_is_never_run(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))
    torch.save(Payload(), tmp_path / "x.pt")
    with pytest.raises(ValueError, match="which torch refuses to unpickle"):
        ArrayDataModule(str(tmp_path / "x.pt"), test_size=1)


@pytest.mark.slow
def test_fit_test_and_predict_on_your_own_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "faces.npy", pixels(n=300, rows=12, columns=10).numpy())
    common = ["--model=VAE", "--model.init_args.latent_dim=2", "--model.init_args.hidden_dim=20",
              "--model.init_args.likelihood=gaussian", "--data=ArrayDataModule", "--data.init_args.path=faces.npy",
              "--data.init_args.test_size=50", "--progress_bar.refresh_rate=0"]
    fitted = cli(["fit", *common, "--trainer.max_steps=30"])
    assert fitted.model.hparams.input_dim == 120 and fitted.model.hparams.train_size == 250
    run = tmp_path / "runs" / "array_nz2" / "version_0"
    assert {p.name for p in (run / "images").iterdir()} == {"samples_2500.png", "reconstructions_2500.png", "manifold_2500.png"}
    tested = cli(["test", *common, "--ckpt_path=last"])
    assert tested.trainer.callback_metrics["lower_bound/test"] == pytest.approx(
        fitted.trainer.callback_metrics["lower_bound/test"].item(), abs=1e-4)
    cli(["predict", *common, "--ckpt_path=last"])
