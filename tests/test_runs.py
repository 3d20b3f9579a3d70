"""The run-folder policy: names, which checkpoint ``last`` means, refusals, purge marks."""

import fcntl
import os

import pytest
import torch

from lit_vae import runs


def test_dataset_and_run_names():
    assert runs.dataset_name("lit_vae.datamodules.MNISTDataModule") == "MNIST"
    assert runs.dataset_name("lit_vae.datamodules.FreyFaceDataModule") == "Frey Face"
    assert runs.run_name("lit_vae.datamodules.MNISTDataModule", "lit_vae.VAE", 20) == "mnist_nz20"
    assert runs.run_name("lit_vae.datamodules.FreyFaceDataModule", "lit_vae.baselines.WakeSleep", 10) == "frey_face_nz10_wake_sleep"


def save(path, step):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step}, path)


def test_last_is_the_newest_state_of_the_newest_run(tmp_path):
    for version in (2, 9, 10):
        save(tmp_path / f"version_{version}" / "checkpoints" / "last.ckpt", 100 * version)
    (tmp_path / "version_11").mkdir()  # opened by something else than a fit (no lock, no checkpoints): not a run
    (tmp_path / "version_11" / "config.yaml").write_text("{}")
    assert runs.resume_checkpoint(tmp_path) == tmp_path / "version_10" / "checkpoints" / "last.ckpt"  # not 9: numbers


def test_the_newest_state_is_found_by_the_step_it_holds(tmp_path):
    folder = tmp_path / "checkpoints"
    save(folder / "last.ckpt", 400)
    save(folder / "epoch=1-step=600.ckpt", 600)  # a save killed before last.ckpt was written
    save(folder / "last-v1.ckpt", 500)
    assert runs.newest_state(folder) == folder / "epoch=1-step=600.ckpt"
    save(folder / "last.ckpt", 600)
    assert runs.newest_state(folder) == folder / "last.ckpt"  # a tie goes to last.ckpt
    (folder / "epoch=2-step=700.ckpt").write_bytes(b"damaged")  # chosen, so that reading it refuses it loudly
    assert runs.newest_state(folder) == folder / "epoch=2-step=700.ckpt"


def test_a_newest_run_without_a_checkpoint_is_refused_by_name(tmp_path):
    save(tmp_path / "version_1" / "checkpoints" / "last.ckpt", 100)
    (tmp_path / "version_2").mkdir()
    (tmp_path / "version_2" / runs.LOCK).write_text("123")  # a fit stopped before its first checkpoint
    with pytest.raises(FileNotFoundError, match=r"version_2, the newest run of .* has no checkpoint yet"):
        runs.resume_checkpoint(tmp_path)


def test_last_without_any_run_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run under .* to resume"):
        runs.resume_checkpoint(tmp_path)


def test_a_folder_lock_names_its_holder_and_is_released(tmp_path):
    runs.lock_folder(tmp_path / "run")
    try:
        with open(tmp_path / "run" / runs.LOCK, "a+") as other, pytest.raises(BlockingIOError):  # as another process would
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError, match=f"in use by another run \\(PID {os.getpid()}\\)"):
            runs.lock_folder(tmp_path / "run")
        assert runs.lock_holder(tmp_path / "run") == str(os.getpid())  # what `lit-vae reproduce --status` reads
    finally:
        runs.release_folders()
    assert runs.lock_holder(tmp_path / "run") is None  # the file stays, the lock is gone
    runs.lock_folder(tmp_path / "run")
    runs.release_folders()


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

