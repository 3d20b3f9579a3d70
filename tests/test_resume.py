"""Exact resume: a run stopped and resumed any number of times (on epoch ends, off them, after a
validation; with another checkpoint interval; from a moved run folder) ends where the run that
never stopped ends: the same parameters, optimizer state, loop position, checkpoint names, and
every point TensorBoard shows."""

import logging
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import IMAGES, SCALARS, EventAccumulator

from lit_vae.events import read_scalars
from tests.helpers import fit, load, train_process

# 1,000 training images: 10 steps an epoch; validation after every second epoch (steps 20, 40, ...).
ARGS = ("--model.init_args.hidden_dim=20", "--data.init_args.train_size=1000", "--trainer.check_val_every_n_epoch=2",
        "--images.num_samples=4", "--images.num_reconstructions=0", "--images.manifold_size=2")
# Stops: 30 ends an epoch, 45 is inside one, 60 ends an epoch and follows its validation; the run ends at 80.
STOPS = (30, 45, 60, 80)


def logged(run: Path) -> dict[str, list]:
    """Every point TensorBoard shows for ``run`` (purges applied): scalars with their values, images by step."""
    events = EventAccumulator(str(run), size_guidance={SCALARS: 0, IMAGES: 0})
    events.Reload()
    points: dict[str, list] = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()[SCALARS]}
    points.update({tag: [e.step for e in events.Images(tag)] for tag in events.Tags()[IMAGES]})
    return points


def assert_same_run(whole: Path, parts: Path) -> None:
    a, b = load(whole / "checkpoints" / "last.ckpt"), load(parts / "checkpoints" / "last.ckpt")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    (sa,), (sb,) = a["optimizer_states"], b["optimizer_states"]
    assert all(torch.equal(sa["state"][i][k], sb["state"][i][k]) for i in sa["state"] for k in sa["state"][i])
    assert a["lr_schedulers"] == b["lr_schedulers"]  # Adagrad's warm-up
    assert (a["epoch"], a["global_step"], a["loops"]) == (b["epoch"], b["global_step"], b["loops"])
    assert sorted(p.name for p in (whole / "checkpoints").glob("*.ckpt")) == sorted(p.name for p in (parts / "checkpoints").glob("*.ckpt"))
    whole_points, parts_points = logged(whole), logged(parts)
    assert {"lower_bound/validation", "lower_bound/train", "lower_bound/test", "images/samples"} <= whole_points.keys()
    assert parts_points == whole_points


def uninterrupted(root: Path, data_dir: Path, every: int) -> Path:
    """The run that never stops, to the last of STOPS, with a step checkpoint every ``every`` steps."""
    fit(root, data_dir, *ARGS, f"--checkpoint.every_n_train_steps={every}", f"--trainer.max_steps={STOPS[-1]}")
    return root / "runs" / "mnist_nz20" / "version_0"


@pytest.fixture(scope="module")
def whole(tmp_path_factory, data_dir) -> Path:
    return uninterrupted(tmp_path_factory.mktemp("whole"), data_dir, every=10)


@pytest.mark.slow
class TestThreeResumes:
    def test_the_same_settings(self, whole, tmp_path, data_dir):
        for i, stop in enumerate(STOPS):
            fit(tmp_path, data_dir, *ARGS, "--checkpoint.every_n_train_steps=10", f"--trainer.max_steps={stop}",
                *(["--ckpt_path=last"] if i else []))
        assert_same_run(whole, tmp_path / "runs" / "mnist_nz20" / "version_0")
        validations = [step for step, _ in read_scalars(whole)["lower_bound/validation"]]
        assert validations == [2_000, 4_000, 6_000, 8_000]  # the one at 6,000 came before the stop at step 60

    def test_another_checkpoint_interval_each_time(self, whole, tmp_path, data_dir):
        for i, (stop, every) in enumerate(zip(STOPS, (10, 7, 13, 10))):
            fit(tmp_path, data_dir, *ARGS, f"--checkpoint.every_n_train_steps={every}", f"--trainer.max_steps={stop}",
                *(["--ckpt_path=last"] if i else []))
        assert_same_run(whole, tmp_path / "runs" / "mnist_nz20" / "version_0")

    def test_a_moved_run_folder(self, whole, tmp_path, data_dir):
        fit(tmp_path / "first", data_dir, *ARGS, "--checkpoint.every_n_train_steps=10", f"--trainer.max_steps={STOPS[0]}")
        shutil.move(tmp_path / "first" / "runs", tmp_path / "moved" / "runs")
        for stop in STOPS[1:]:
            fit(tmp_path / "moved", data_dir, *ARGS, "--checkpoint.every_n_train_steps=10", f"--trainer.max_steps={stop}",
                "--ckpt_path=last")
        assert_same_run(whole, tmp_path / "moved" / "runs" / "mnist_nz20" / "version_0")


@pytest.fixture(scope="module")
def whole_unsaved(tmp_path_factory, data_dir) -> Path:
    """The uninterrupted run with no step checkpoint before its end."""
    return uninterrupted(tmp_path_factory.mktemp("whole_unsaved"), data_dir, every=1000)


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "signum"), [(30, signal.SIGINT), (45, signal.SIGTERM)])
def test_a_signal_stops_at_a_step_with_a_checkpoint_and_the_resume_is_exact(whole_unsaved, tmp_path, data_dir, caplog, stop, signum):
    """Ctrl-C at the end of a pass (step 30) and SIGTERM inside one (45), long before the first
    step checkpoint (every 1,000 steps here): the fit stops at that step with last.ckpt, says so,
    and ``--ckpt_path last`` ends as the run that never stopped."""
    caplog.set_level(logging.INFO)
    handler = signal.getsignal(signal.SIGINT)  # SIG_IGN in an xdist worker, Python's own elsewhere
    stopped = fit(tmp_path, data_dir, *ARGS, "--checkpoint.every_n_train_steps=1000", f"--trainer.max_steps={STOPS[-1]}",
                  "--trainer.callbacks+=tests.helpers.SignalAt", f"--trainer.callbacks.step={stop}",
                  f"--trainer.callbacks.signum={int(signum)}")
    assert stopped.trainer.checkpoint_callback.stopped_by == signum
    run = tmp_path / "runs" / "mnist_nz20" / "version_0"
    assert load(run / "checkpoints" / "last.ckpt")["global_step"] == stop
    assert f"stopped by {signum.name} at {stop * 100:,} samples (step {stop})" in caplog.text
    assert signal.getsignal(signal.SIGINT) is handler  # the handlers are given back
    fit(tmp_path, data_dir, *ARGS, "--checkpoint.every_n_train_steps=1000", f"--trainer.max_steps={STOPS[-1]}", "--ckpt_path=last")
    assert_same_run(whole_unsaved, run)


@pytest.mark.slow
def test_a_time_interval_writes_step_checkpoints_beside_the_step_interval(tmp_path, data_dir):
    """--checkpoint.train_time_interval (Lightning's): a zero interval writes a step checkpoint at
    every step (the newest kept) where the step interval (every 1,000) would write none."""
    fit(tmp_path, data_dir, *ARGS, "--trainer.max_steps=25", "--checkpoint.every_n_train_steps=0",
        "--checkpoint.train_time_interval=0:00:00")
    folder = tmp_path / "runs" / "mnist_nz20" / "version_0" / "checkpoints"
    assert sorted(p.name for p in folder.glob("*.ckpt")) == ["epoch=2-step=25.ckpt", "last.ckpt"]


def test_the_command_exits_with_the_signals_status(tmp_path, data_dir):
    stopped = train_process("fit", *ARGS, f"--data.init_args.data_dir={data_dir}",
                            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", "--progress_bar.refresh_rate=0",
                            "--trainer.max_steps=50", "--trainer.callbacks+=tests.helpers.SignalAt",
                            "--trainer.callbacks.step=5", f"--trainer.callbacks.signum={int(signal.SIGTERM)}")
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-2000:]
    assert "Continue with --ckpt_path last" in stopped.stderr


def ddp_fit(root: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return train_process("fit", f"--data.init_args.data_dir={data_dir}", f"--trainer.logger.init_args.save_dir={root / 'runs'}",
                         "--trainer.strategy=ddp", "--trainer.devices=2", "--progress_bar.refresh_rate=0", *ARGS,
                         "--checkpoint.every_n_train_steps=4", "--trainer.max_steps=15", *args)


@pytest.mark.slow
@pytest.mark.xdist_group("ddp")  # never beside another DDP run (see pyproject.toml)
def test_ddp_kill_mid_pass_then_resume_logs_the_uninterrupted_pass(tmp_path, data_dir):
    """2 ranks x 100 datapoints a step: 5 steps a pass of 1,000. Both ranks are killed (SIGKILL,
    nothing flushed) after 9 steps, 4 steps into the second pass; the resume starts from the
    step-8 checkpoint, 3 steps into the pass, whose running sums each rank must get back: rank 1's
    differ from rank 0's, and the pass's mean is over both."""
    assert ddp_fit(tmp_path / "whole", data_dir).returncode == 0
    killed = ddp_fit(tmp_path / "parts", data_dir, "--trainer.callbacks+=lit_vae.callbacks.faults.KillAt", "--trainer.callbacks.step=9")
    assert killed.returncode != 0
    parts = tmp_path / "parts" / "runs" / "mnist_nz20" / "version_0"
    assert load(parts / "checkpoints" / "last.ckpt")["global_step"] == 8
    resumed = ddp_fit(tmp_path / "parts", data_dir, "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = read_scalars(tmp_path / "whole" / "runs" / "mnist_nz20" / "version_0")["lower_bound/train"]
    assert [step for step, _ in whole] == [1_000, 2_000, 3_000]
    assert read_scalars(parts)["lower_bound/train"] == whole

