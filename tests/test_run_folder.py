"""A run on disk: names, which checkpoint ``last`` means, refusals, locks, what a resume clears,
progress, purge marks, and the atomic write every file goes through."""

import fcntl
import os

import pytest
import torch

from lit_vae.atomic import atomic_write
from lit_vae.datamodules.base import dataset_name
from lit_vae.folder_lock import LOCK, lock_holder, release_held
from lit_vae.run_folder import RunFolder, RunVersions, newest_state, purge_step, run_name


def test_dataset_and_run_names():
    assert dataset_name("lit_vae.datamodules.MNISTDataModule") == "MNIST"
    assert dataset_name("lit_vae.datamodules.FreyFaceDataModule") == "Frey Face"
    assert run_name("MNIST", "lit_vae.VAE", 20) == "mnist_nz20"
    assert run_name("Frey Face", "lit_vae.baselines.WakeSleep", 10) == "frey_face_nz10_wake_sleep"


def save(path, step):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step}, path)


def test_last_is_the_newest_state_of_the_newest_run(tmp_path):
    for version in (2, 9, 10):
        save(tmp_path / f"version_{version}" / "checkpoints" / "last.ckpt", 100 * version)
    (tmp_path / "version_11").mkdir()  # opened by something else than a fit (no lock, no checkpoints): not a run
    (tmp_path / "version_11" / "config.yaml").write_text("{}")
    assert RunVersions(tmp_path).resume_checkpoint() == tmp_path / "version_10" / "checkpoints" / "last.ckpt"  # not 9: numbers


def test_the_newest_state_is_found_by_the_step_it_holds(tmp_path):
    folder = tmp_path / "checkpoints"
    save(folder / "last.ckpt", 400)
    save(folder / "epoch=1-step=600.ckpt", 600)  # a save killed before last.ckpt was written
    save(folder / "last-v1.ckpt", 500)
    assert newest_state(folder) == folder / "epoch=1-step=600.ckpt"
    save(folder / "last.ckpt", 600)
    assert newest_state(folder) == folder / "last.ckpt"  # a tie goes to last.ckpt
    (folder / "epoch=2-step=700.ckpt").write_bytes(b"damaged")  # chosen, so that reading it refuses it loudly
    assert newest_state(folder) == folder / "epoch=2-step=700.ckpt"


def test_a_newest_run_without_a_checkpoint_is_refused_by_name(tmp_path):
    save(tmp_path / "version_1" / "checkpoints" / "last.ckpt", 100)
    (tmp_path / "version_2").mkdir()
    (tmp_path / "version_2" / LOCK).write_text("123")  # a fit stopped before its first checkpoint
    with pytest.raises(FileNotFoundError, match=r"version_2, the newest run of .* has no checkpoint yet"):
        RunVersions(tmp_path).resume_checkpoint()


def test_last_without_any_run_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run under .* to resume"):
        RunVersions(tmp_path).resume_checkpoint()


def test_a_folder_lock_names_its_holder_and_is_released(tmp_path):
    RunFolder(tmp_path / "run").lock()
    try:
        with open(tmp_path / "run" / LOCK, "a+") as other, pytest.raises(BlockingIOError):  # as another process would
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError, match=f"in use by another run \\(PID {os.getpid()}\\)"):
            RunFolder(tmp_path / "run").lock()
        assert lock_holder(tmp_path / "run") == str(os.getpid())  # what `lit-vae reproduce --status` reads
    finally:
        release_held()
    assert lock_holder(tmp_path / "run") is None  # the file stays, the lock is gone
    RunFolder(tmp_path / "run").lock()
    release_held()


def test_a_used_version_folder_is_refused(tmp_path):
    folder = RunFolder.of(tmp_path, "mnist_nz20", 3)
    assert folder.path == tmp_path / "mnist_nz20" / "version_3"
    folder.refuse_used()  # does not exist: fine
    folder.path.mkdir(parents=True)
    folder.refuse_used()  # empty: fine
    (folder.path / "events.out.tfevents.1").write_bytes(b"")
    with pytest.raises(ValueError, match="already holds a run"):
        folder.refuse_used()


def test_the_run_of_a_checkpoint(tmp_path):
    path = tmp_path / "runs" / "mnist_nz20" / "version_4" / "checkpoints" / "last.ckpt"
    assert RunFolder.of_checkpoint(path).logger_location() == (str(tmp_path / "runs"), "mnist_nz20", 4)
    assert RunFolder.of_checkpoint(tmp_path / "elsewhere" / "model.ckpt") is None


def test_purge_mark_is_just_after_the_checkpoint():
    assert purge_step({"samples_evaluated": 200_000}) == 200_001


def test_a_baseline_run_name_ends_with_its_method():
    assert run_name("MNIST", "lit_vae.baselines.MCEM", 3) == "mnist_nz3_mcem"



def test_configs_of_resumes_are_numbered_and_evaluation_folders_known(tmp_path):
    folder = RunFolder(tmp_path / "version_0")
    folder.path.mkdir()
    assert folder.next_config_name() == "config.yaml"
    (folder.path / "config.yaml").write_text("{}")
    (folder.path / "config.resume-1.yaml").write_text("{}")
    assert folder.next_config_name() == "config.resume-2.yaml"
    assert RunFolder.is_evaluation(folder.path / "test") and not RunFolder.is_evaluation(tmp_path / "test")


def test_progress_is_written_whole_and_read_back(tmp_path):
    folder = RunFolder(tmp_path / "version_0")
    assert folder.progress() is None
    progress = {"samples_evaluated": 100, "max_steps": 10, "global_step": 1, "seconds": 0.5, "samples_per_second": 200.0}
    folder.write_progress(progress)
    assert folder.progress() == progress and [p.name for p in folder.path.iterdir()] == ["progress.json"]


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "file.bin"
    atomic_write(path, lambda file: file.write(b"old"))

    def fail(file):
        file.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_a_resume_clears_leftovers_orphans_and_the_end_of_fit_events_and_nothing_else(tmp_path):
    folder = RunFolder(tmp_path / "version_0")
    checkpoints = folder.checkpoints
    checkpoints.mkdir(parents=True)
    kept = ["last.ckpt", "epoch=1-step=600.ckpt", "epoch=2-step=800.ckpt", "mine.ckpt", "notes.txt"]
    gone = [".last.ckpt.k3j2.tmp", "epoch=0-step=400.ckpt"]  # a killed save's temporary; the file step 600 replaced
    for name in kept + gone:
        (checkpoints / name).write_bytes(name.encode())
    (folder.path / "events.out.tfevents.1.host.1").write_bytes(b"curve")
    (folder.path / "events.out.tfevents.2.host.2.end_of_fit").write_bytes(b"end")
    (folder.path / ".progress.json.x7q1.tmp").write_bytes(b"{")  # a progress write killed midway
    removed = folder.clear_for_resume(checkpoints, 600, tracked={"last.ckpt", "epoch=1-step=600.ckpt"})
    assert sorted(p.name for p in removed) == sorted([*gone, ".progress.json.x7q1.tmp", "events.out.tfevents.2.host.2.end_of_fit"])
    assert {p.name: p.read_bytes() for p in checkpoints.iterdir()} == {name: name.encode() for name in kept}
    assert [p.name for p in folder.path.glob("events.*")] == ["events.out.tfevents.1.host.1"]


def test_a_resume_with_custom_checkpoint_names_removes_no_step_checkpoint(tmp_path):
    (tmp_path / "epoch=0-step=400.ckpt").write_bytes(b"x")
    assert RunFolder(tmp_path).clear_for_resume(tmp_path, 600, tracked=None) == []
    assert (tmp_path / "epoch=0-step=400.ckpt").exists()
