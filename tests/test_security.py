"""Crafted and damaged files against every entry point that reads them: each is refused in one
line that names the file, nothing it names is imported, and nothing saved is changed. (The
checkpoints that unpickle code or name a module are in ``test_checkpoint_safety.py``; a
checkpoint linked into another run in ``test_reliability.py``.)"""

import errno
import resource
import shutil

import pytest
import torch

from lit_vae import folder_lock, run_folder, sweep
from lit_vae.callbacks.checkpoint_files import read_checkpoint
from lit_vae.figures import main as figures
from lit_vae.reproduce import main as reproduce
from tests.helpers import fit, snapshot, train_process

ARGS = ("--model.init_args.hidden_dim=20", "--data.init_args.train_size=1000", "--images.num_samples=4",
        "--images.num_reconstructions=0", "--images.manifold_size=2")


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    """A short MNIST run: ``runs/mnist_nz20/version_0`` with its last.ckpt at step 20."""
    tmp = tmp_path_factory.mktemp("run")
    fit(tmp, data_dir, *ARGS, "--trainer.max_steps=20")
    return tmp


def last(run):
    return run / "runs" / "mnist_nz20" / "version_0" / "checkpoints" / "last.ckpt"


def refused_by_fit(run, data_dir, capsys, path, message):
    before = snapshot(run)
    with pytest.raises(SystemExit) as exit_:
        fit(run, data_dir, *ARGS, "--trainer.max_steps=40", f"--ckpt_path={path}")
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and message in err[-1] and str(path) in err[-1], err[-3:]
    assert snapshot(run) == before


@pytest.mark.slow
@pytest.mark.parametrize("missing", ["loops", "optimizer_states", "samples_evaluated"])
def test_a_checkpoint_without_the_state_a_resume_needs_is_refused(run, data_dir, capsys, tmp_path, missing):
    checkpoint = torch.load(last(run), weights_only=True)
    del checkpoint[missing]
    path = tmp_path / f"no_{missing}.ckpt"
    torch.save(checkpoint, path)
    refused_by_fit(run, data_dir, capsys, path, f"lacks the training state a resume needs ({missing} missing or malformed)")


@pytest.mark.slow
def test_a_state_dict_with_a_value_that_is_no_tensor_is_refused(run, data_dir, capsys, tmp_path):
    checkpoint = torch.load(last(run), weights_only=True)
    checkpoint["state_dict"]["decoder.hidden.weight"] = [1.0, 2.0]
    path = tmp_path / "list.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match=r"not tensors \(decoder.hidden.weight\)"):
        read_checkpoint(path)
    refused_by_fit(run, data_dir, capsys, path, "its state_dict holds values that are not tensors")


@pytest.mark.parametrize("content", ["[1, 2]", '{"samples_evaluated": "all"}', '{"samples_evaluated": true}', "{not json"])
def test_a_tampered_progress_file_reads_as_none_and_status_goes_on(tmp_path, capsys, content):
    folder = tmp_path / "out" / "figure2_mnist_nz3" / "version_0"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / run_folder.PROGRESS).write_text(content)
    assert run_folder.RunFolder(folder).progress() is None
    reproduce(["--out", str(tmp_path / "out"), "--run", "figure2_mnist_nz3", "--status"])
    assert "figure2_mnist_nz3" in capsys.readouterr().out


@pytest.mark.slow
def test_a_garbled_config_is_one_line_in_the_report_and_the_figures_tool(run, tmp_path, capsys):
    out = tmp_path / "out"
    (spec,) = sweep.select(sweep.load_manifest(), names=["figure2_mnist_nz20"])
    plan = sweep.Plan(spec, 20_000, out, 1, 1)
    folder = plan.root / "version_0"
    folder.parent.mkdir(parents=True)
    shutil.copytree(run / "runs" / "mnist_nz20" / "version_0", folder)
    (folder / "config.yaml").write_text("model: [unclosed\n")
    reproduce(["--out", str(out), "--run", "figure2_mnist_nz20", "--samples", "20000", "--report"])
    err = capsys.readouterr().err
    assert f"{folder / 'config.yaml'} does not say what the run trained" in err and "Traceback" not in err
    assert "Not run yet: figure2_mnist_nz20." in (out / "report.md").read_text()
    with pytest.raises(SystemExit) as exit_:
        figures([str(folder)])
    assert exit_.value.code == 2 and "does not say what the run trained" in capsys.readouterr().err


@pytest.mark.slow
def test_a_config_with_a_python_yaml_tag_runs_nothing(run, tmp_path, capsys):
    """A run's config.yaml that asks YAML to call os.system is read with safe_load: refused as a
    damaged file in one line, and the command never runs."""
    marker = tmp_path / "the-tag-ran"
    folder = tmp_path / "runs" / "mnist_nz20" / "version_0"
    shutil.copytree(run / "runs" / "mnist_nz20" / "version_0", folder)
    (folder / "config.yaml").write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(SystemExit) as exit_:
        figures([str(folder)])
    assert exit_.value.code == 2 and "does not say what the run trained" in capsys.readouterr().err
    assert not marker.exists()


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_last_checkpoint_stays_whole(tmp_path, data_dir):
    """A file-size limit (as ``ulimit -f``) below a checkpoint's size: the fit ends in one line
    that names the checkpoint, and no partial file is left."""
    limit = 600 * 1024

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = train_process("fit", f"--data.init_args.data_dir={data_dir}", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
                         "--progress_bar.refresh_rate=0", "--model.init_args.hidden_dim=200", "--data.init_args.train_size=1000",
                         "--trainer.max_steps=30", "--checkpoint.every_n_train_steps=10", "--images.num_samples=1",
                         "--images.num_reconstructions=0", "--images.manifold_size=1", preexec_fn=limited)
    assert done.returncode == 1
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("error: could not write the checkpoint") and "epoch=0-step=10.ckpt" in message
    assert "Traceback" not in done.stderr
    assert list((tmp_path / "runs" / "mnist_nz20" / "version_0" / "checkpoints").iterdir()) == []


@pytest.mark.slow
def test_a_file_system_without_locks_says_so_and_runs_when_asked(tmp_path, data_dir, capsys, monkeypatch):
    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(folder_lock.fcntl, "flock", no_locks)
    with pytest.raises(SystemExit) as exit_:
        fit(tmp_path, data_dir, *ARGS, "--trainer.max_steps=5")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and "cannot lock" in line and "No locks available" in line and "LIT_VAE_NO_LOCKS=1" in line
    reproduce(["--out", str(tmp_path / "runs"), "--run", "figure2_mnist_nz3", "--status"])  # status needs no lock
    monkeypatch.setenv("LIT_VAE_NO_LOCKS", "1")
    fit(tmp_path, data_dir, *ARGS, "--trainer.max_steps=5", "--trainer.logger.init_args.version=1")
    assert (tmp_path / "runs" / "mnist_nz20" / "version_1" / "checkpoints" / "last.ckpt").is_file()
