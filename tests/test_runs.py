"""The run-folder policy: names, which checkpoint ``last`` means, refusals, purge marks."""

import pytest

from lit_vae import runs


def test_dataset_and_run_names():
    assert runs.dataset_name("lit_vae.datamodules.MNISTDataModule") == "MNIST"
    assert runs.dataset_name("lit_vae.datamodules.FreyFaceDataModule") == "Frey Face"
    assert runs.run_name("lit_vae.datamodules.MNISTDataModule", "lit_vae.VAE", 20) == "mnist_nz20"
    assert runs.run_name("lit_vae.datamodules.FreyFaceDataModule", "lit_vae.baselines.WakeSleep", 10) == "frey_face_nz10_wake_sleep"


def test_last_is_the_newest_version_that_has_a_checkpoint(tmp_path):
    for version in (2, 9, 10):
        (tmp_path / f"version_{version}" / "checkpoints").mkdir(parents=True)
        (tmp_path / f"version_{version}" / "checkpoints" / "last.ckpt").write_bytes(b"")
    (tmp_path / "version_11").mkdir()  # no checkpoint yet
    assert runs.newest_last_checkpoint(tmp_path) == tmp_path / "version_10" / "checkpoints" / "last.ckpt"  # not 9: numbers


def test_last_without_any_checkpoint_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="Nothing to resume"):
        runs.newest_last_checkpoint(tmp_path)


def test_a_used_version_folder_is_refused(tmp_path):
    folder = runs.version_folder(tmp_path, "mnist_nz20", 3)
    assert folder == tmp_path / "mnist_nz20" / "version_3"
    runs.refuse_used_version(folder)  # does not exist: fine
    folder.mkdir(parents=True)
    runs.refuse_used_version(folder)  # empty: fine
    (folder / "events.out.tfevents.1").write_bytes(b"")
    with pytest.raises(ValueError, match="already holds a run"):
        runs.refuse_used_version(folder)


def test_the_run_of_a_checkpoint(tmp_path):
    path = tmp_path / "runs" / "mnist_nz20" / "version_4" / "checkpoints" / "last.ckpt"
    assert runs.run_of_checkpoint(path) == (tmp_path / "runs", "mnist_nz20", 4)
    assert runs.run_of_checkpoint(tmp_path / "elsewhere" / "model.ckpt") is None


def test_purge_mark_is_just_after_the_checkpoint():
    assert runs.purge_step({"samples_evaluated": 200_000}) == 200_001


def test_a_baseline_run_name_ends_with_its_method():
    assert runs.run_name("lit_vae.datamodules.MNISTDataModule", "lit_vae.baselines.MCEM", 3) == "mnist_nz3_mcem"

