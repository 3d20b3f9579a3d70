"""Data modules: documented shapes, ranges and splits; clear errors that write nothing."""

import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import MNIST

from lit_vae.datamodules import (
    CorruptDataError,
    DataNotFoundError,
    FreyFaceDataModule,
    MNISTDataModule,
    TensorBatches,
    files,
    frey_face,
    mnist,
)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def mnist_data(data_dir):
    dm = MNISTDataModule(data_dir=str(data_dir), download=False)
    dm.setup()
    return dm


class TestMNIST:
    def test_paper_protocol_splits(self, mnist_data, data_dir):
        official = MNIST(str(data_dir), train=True).data.reshape(60_000, -1).float() / 255
        splits = mnist_data.splits
        assert splits["train"].shape == (50_000, 784)
        assert splits["validation"].shape == (10_000, 784)
        assert splits["test"].shape == (10_000, 784)
        torch.testing.assert_close(splits["train"], official[:50_000])
        torch.testing.assert_close(splits["validation"], official[50_000:])
        torch.testing.assert_close(splits["test"], MNIST(str(data_dir), train=False).data.reshape(10_000, -1).float() / 255)

    def test_grey_levels_in_unit_interval(self, mnist_data):
        train = mnist_data.splits["train"]
        assert train.min() == 0 and train.max() == 1
        assert ((train > 0) & (train < 1)).any()  # grey levels, not binarised

    def test_static_binarisation(self, data_dir, mnist_data):
        dm = MNISTDataModule(data_dir=str(data_dir), binarize="static", download=False)
        dm.setup()
        train = dm.splits["train"]
        assert set(train.unique().tolist()) == {0.0, 1.0}
        assert abs(train.mean() - mnist_data.splits["train"].mean()) < 1e-3  # Bernoulli(grey level)
        assert next(iter(dm.train_dataloader())).x.unique().tolist() == [0.0, 1.0]

    def test_dynamic_binarisation_resamples_training_batches_only(self, data_dir):
        dm = MNISTDataModule(data_dir=str(data_dir), binarize="dynamic", train_size=2_000, batch_size=2_000, download=False, seed=0)
        dm.setup()
        loader = dm.train_dataloader()
        first, second = next(iter(loader)).x, next(iter(loader)).x  # two epochs, same images
        assert set(first.unique().tolist()) == {0.0, 1.0}
        assert (first.sum() - second.sum()).abs() < 0.01 * first.sum()  # same images ...
        assert not torch.equal(first.sort(0).values, second.sort(0).values)  # ... sampled afresh
        test = dm.splits["test"]
        assert set(test.unique().tolist()) == {0.0, 1.0}
        assert torch.equal(next(iter(dm.test_dataloader())).x, next(iter(dm.test_dataloader())).x)

    def test_paper_era_pixel_divisor(self, data_dir, mnist_data):
        dm = MNISTDataModule(data_dir=str(data_dir), pixel_divisor=256, download=False)
        dm.setup()
        torch.testing.assert_close(dm.splits["train"], mnist_data.splits["train"] * 255 / 256)
        assert dm.splits["test"].max() == 255 / 256

    def test_first_n_training_images(self, data_dir, mnist_data):
        dm = MNISTDataModule(data_dir=str(data_dir), train_size=1000, download=False)
        dm.setup()
        torch.testing.assert_close(dm.splits["train"], mnist_data.splits["train"][:1000])
        assert dm.train_size == 1000 and dm.input_dim == 784

    def test_all_training_images_and_no_validation(self, data_dir):
        """The IWAE paper's split: the 60,000 training images, no validation loader (an empty list)."""
        dm = MNISTDataModule(data_dir=str(data_dir), train_size=60_000, val_size=0, download=False)
        dm.setup()
        assert len(dm.splits["train"]) == 60_000 and dm.val_dataloader() == []

    def test_invalid_sizes(self):
        with pytest.raises(ValueError, match="train_size"):
            MNISTDataModule(train_size=55_000)

    def test_missing_files_clear_error_and_nothing_written(self, tmp_path):
        dm = MNISTDataModule(data_dir=str(tmp_path / "data"), download=False)
        with pytest.raises(DataNotFoundError) as error:
            dm.setup()
        message = str(error.value)
        assert str((tmp_path / "data" / "MNIST" / "raw").resolve()) in message
        assert all(name in message for name in mnist.SHA256)
        assert "LIT_VAE_DATA_DIR" in message
        assert list(tmp_path.iterdir()) == []

    def test_failed_download_clear_error_and_nothing_written(self, tmp_path, monkeypatch):
        def offline(url, *args, **kwargs):
            raise OSError(f"no network for {url}")

        monkeypatch.setattr(mnist, "download_and_extract_archive", offline)
        dm = MNISTDataModule(data_dir=str(tmp_path / "data"), download=True)
        with pytest.raises(DataNotFoundError, match="could not be downloaded .*no network"):
            dm.setup()
        assert list(tmp_path.iterdir()) == []

    def test_a_server_that_never_answers_times_out(self, tmp_path, monkeypatch):
        """A server that accepts the connection and then says nothing: the download gives up after
        DOWNLOAD_TIMEOUT seconds with a clear error, instead of waiting forever."""
        with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts; nobody answers
            monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{silent.getsockname()[1]}/"])
            monkeypatch.setattr(files, "DOWNLOAD_TIMEOUT", 0.5)
            dm = MNISTDataModule(data_dir=str(tmp_path / "data"), download=True)
            started = time.monotonic()
            with pytest.raises(DataNotFoundError, match="could not be downloaded .*timed out"):
                dm.setup()
        assert time.monotonic() - started < 30
        assert list(tmp_path.iterdir()) == []

    def test_download_goes_through_a_verified_temporary_folder(self, tmp_path, monkeypatch, data_dir):
        """A 'download' that yields the right files lands them; one with a wrong file lands none."""
        raw = data_dir / "MNIST" / "raw"

        def fake_download(url, download_root, filename, md5):
            name = filename.removesuffix(".gz")
            shutil.copyfile(raw / name, Path(download_root) / name)

        monkeypatch.setattr(mnist, "download_and_extract_archive", fake_download)
        dm = MNISTDataModule(data_dir=str(tmp_path / "good"), download=True)
        dm.setup()
        assert sorted(p.name for p in (tmp_path / "good" / "MNIST" / "raw").iterdir()) == sorted(mnist.SHA256)

        def corrupt_download(url, download_root, filename, md5):
            fake_download(url, download_root, filename, md5)
            with open(Path(download_root) / filename.removesuffix(".gz"), "r+b") as f:
                f.write(b"\0" * 64)

        monkeypatch.setattr(mnist, "download_and_extract_archive", corrupt_download)
        with pytest.raises(CorruptDataError):
            MNISTDataModule(data_dir=str(tmp_path / "bad"), download=True).setup()
        assert not (tmp_path / "bad").exists()

    @pytest.mark.parametrize("damage", ["truncate", "flip"])
    def test_corrupted_file_refused_and_left_alone(self, tmp_path, data_dir, damage):
        raw = tmp_path / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for name in mnist.SHA256:
            shutil.copyfile(data_dir / "MNIST" / "raw" / name, raw / name)
        victim = raw / "t10k-images-idx3-ubyte"
        data = victim.read_bytes()
        victim.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:-1] + bytes([data[-1] ^ 1]))
        before = _snapshot(tmp_path)
        with pytest.raises(CorruptDataError, match="t10k-images-idx3-ubyte.*SHA-256"):
            MNISTDataModule(data_dir=str(tmp_path), download=True).setup()
        assert _snapshot(tmp_path) == before


class TestFreyFace:
    def test_documented_split(self, data_dir):
        dm = FreyFaceDataModule(data_dir=str(data_dir), download=False)
        dm.setup()
        train, test = dm.splits["train"], dm.splits["test"]
        assert train.shape == (1600, 560) and test.shape == (365, 560)
        assert dm.image_shape == (28, 20) and dm.input_dim == 560
        # pixels / 256: multiples of 1/256 in [0, 1)
        assert train.min() >= 0 and train.max() < 1
        torch.testing.assert_close(train * 256, (train * 256).round())
        # a partition of the file's 1,965 images, fixed by split_seed
        pixels = frey_face.read_pixels(data_dir / "FreyFace" / "frey_rawface.mat")
        everything = (torch.cat([train, test]) * 256).int()
        assert sorted(map(tuple, everything.tolist())) == sorted(map(tuple, pixels.astype(np.int64).tolist()))
        again = FreyFaceDataModule(data_dir=str(data_dir), download=False)
        again.setup()
        assert torch.equal(again.splits["train"], train)
        other = FreyFaceDataModule(data_dir=str(data_dir), download=False, split_seed=1)
        other.setup()
        assert not torch.equal(other.splits["train"], train)

    def test_paper_split_is_numpys_seeded_shuffle_of_the_file_order(self, data_dir):
        pixels = frey_face.read_pixels(data_dir / "FreyFace" / "frey_rawface.mat")
        images = pixels.copy()
        np.random.seed(0)  # the paper-era code's global generator
        np.random.shuffle(images)
        dm = FreyFaceDataModule(data_dir=str(data_dir), download=False)
        dm.setup()
        assert np.array_equal((dm.splits["train"] * 256).round().numpy().astype(np.uint8), images[:1600])
        assert np.array_equal((dm.splits["test"] * 256).round().numpy().astype(np.uint8), images[1600:])

    def test_missing_file_clear_error_and_nothing_written(self, tmp_path):
        with pytest.raises(DataNotFoundError, match="frey_rawface.mat") as error:
            FreyFaceDataModule(data_dir=str(tmp_path), download=False).setup()
        assert str((tmp_path / "FreyFace").resolve()) in str(error.value)
        assert list(tmp_path.iterdir()) == []

    def test_truncated_file_refused_and_left_alone(self, tmp_path, data_dir):
        target = tmp_path / "FreyFace" / "frey_rawface.mat"
        target.parent.mkdir()
        data = (data_dir / "FreyFace" / "frey_rawface.mat").read_bytes()
        target.write_bytes(data[: len(data) // 3])
        before = _snapshot(tmp_path)
        with pytest.raises(CorruptDataError, match="frey_rawface.mat"):
            FreyFaceDataModule(data_dir=str(tmp_path)).setup()
        assert _snapshot(tmp_path) == before


def points(batches) -> torch.Tensor:
    """The datapoints of ``batches`` (an iterable of ``Batch``), concatenated."""
    return torch.cat([batch.x for batch in batches])


class TestTensorBatches:
    data = torch.arange(1050.0)[:, None]  # row i holds the value i

    def test_every_datapoint_once_per_epoch_in_a_new_order(self):
        loader = TensorBatches(self.data, 100, shuffle=True, seed=3)
        epochs = [points(loader) for _ in range(2)]
        assert len(loader) == 11 and [len(b.x) for b in loader][-1] == 50
        for epoch in epochs:
            assert torch.equal(epoch.sort(0).values, self.data)
        assert not torch.equal(epochs[0], epochs[1])
        assert torch.equal(points(TensorBatches(self.data, 100, shuffle=True, seed=3)), epochs[0])

    def test_resume_mid_epoch(self):
        loader = TensorBatches(self.data, 100, shuffle=True, seed=3)
        iterator = iter(loader)
        seen = [next(iterator) for _ in range(4)]
        resumed = TensorBatches(self.data, 100, shuffle=True, seed=3)
        resumed.load_state_dict(loader.state_dict())
        uninterrupted = list(TensorBatches(self.data, 100, shuffle=True, seed=3))
        assert torch.equal(points(seen + list(resumed)), points(uninterrupted))
        assert resumed.state_dict() == {"epoch": 1, "position": 0}

    def test_shards_are_disjoint_and_even(self):
        shards = [TensorBatches(self.data, 100, shuffle=True, seed=3, rank=r, world_size=4, even_shards=True) for r in range(4)]
        parts = [points(s) for s in shards]
        assert {len(p) for p in parts} == {1050 // 4} and len({len(s) for s in shards}) == 1
        assert torch.unique(torch.cat(parts)).numel() == 4 * (1050 // 4)

    def test_evaluation_shards_cover_everything(self):
        parts = [points(TensorBatches(self.data, 100, shuffle=False, rank=r, world_size=3)) for r in range(3)]
        assert torch.equal(torch.cat(parts).sort(0).values, self.data)

    @pytest.mark.parametrize("options", [dict(shuffle=True, seed=3), dict(shuffle=True, seed=3, rank=1, world_size=2, even_shards=True),
                                         dict(shuffle=False), dict(shuffle=False, rank=2, world_size=3)])
    def test_each_batch_carries_the_rows_of_its_datapoints(self, options):
        batches = list(TensorBatches(self.data, 100, **options))
        assert all(torch.equal(batch.x[:, 0], batch.index.float()) for batch in batches)

    def test_evaluation_cut_short_does_not_shorten_the_next(self):
        loader = TensorBatches(self.data, 100, shuffle=False)
        iterator = iter(loader)
        next(iterator), next(iterator)  # what the sanity check does
        assert torch.equal(points(loader), self.data)
