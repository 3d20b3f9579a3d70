"""A checkpoint file is data, never code: one whose unpickling would run code is refused by
``fit``, ``test`` and ``load_from_checkpoint``, and the code does not run."""

import pickle

import lightning
import pytest
import torch

from lit_vae import VAE
from lit_vae.callbacks.checkpoint_files import read_checkpoint
from lit_vae.cli import cli
from tests.helpers import REPO, snapshot


class Payload:
    """Unpickled, it opens (creates) ``marker``: code that a crafted checkpoint runs."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture
def crafted(tmp_path):
    """``runs/mnist_nz20/version_0/checkpoints/last.ckpt`` with a payload beside a real state_dict."""
    marker = tmp_path / "the-payload-ran"
    folder = tmp_path / "runs" / "mnist_nz20" / "version_0" / "checkpoints"
    folder.mkdir(parents=True)
    path = folder / "last.ckpt"
    torch.save({"state_dict": VAE().state_dict(), "payload": Payload(marker)}, path)
    with pytest.raises(pickle.UnpicklingError):  # the file is what it claims: torch refuses it too
        torch.load(path, weights_only=True)
    return path, marker


def command(subcommand, tmp_path, *args):
    return [subcommand, "--config", str(REPO / "configs" / "mnist.yaml"),
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", "--progress_bar.refresh_rate=0", *args]


@pytest.mark.parametrize(("subcommand", "ckpt"), [("fit", "file"), ("fit", "last"), ("test", "file"), ("validate", "file")])
def test_the_cli_refuses_it_and_the_code_does_not_run(crafted, tmp_path, capsys, subcommand, ckpt):
    path, marker = crafted
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit):
        cli(command(subcommand, tmp_path, f"--ckpt_path={path if ckpt == 'file' else 'last'}"))
    assert "arbitrary unpickling" in capsys.readouterr().err
    assert not marker.exists()
    assert snapshot(tmp_path) == before


def test_load_from_checkpoint_refuses_it_and_the_code_does_not_run(crafted):
    path, marker = crafted
    with pytest.raises(pickle.UnpicklingError):
        VAE.load_from_checkpoint(path)
    assert not marker.exists()


def test_read_checkpoint_says_why(crafted):
    path, marker = crafted
    with pytest.raises(ValueError, match="only arbitrary unpickling could rebuild"):
        read_checkpoint(path)
    assert not marker.exists()



@pytest.fixture
def naming(tmp_path, monkeypatch):
    """A module ``payload`` on the import path that creates ``marker`` when imported, and a
    function making a checkpoint (weights_only-loadable) whose hyperparameters are edited."""
    marker = tmp_path / "the-module-was-imported"
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "payload.py").write_text(f"open({str(marker)!r}, 'w').close()\nVAE = make = object\n")
    monkeypatch.syspath_prepend(str(modules))

    def make(**edits):
        model = VAE()
        hyper_parameters = {"_class_path": "lit_vae.VAE", **dict(model.hparams),
                            "_instantiator": "lightning.pytorch.cli.instantiate_module", **edits}
        path = tmp_path / "crafted.ckpt"
        torch.save({"state_dict": model.state_dict(), "hyper_parameters": hyper_parameters,
                    "pytorch-lightning_version": lightning.__version__}, path)
        return path

    return make, marker


@pytest.mark.parametrize("edits", [{"_class_path": "payload.VAE"}, {"_instantiator": "payload.make"},
                                   {"extra": {"class_path": "payload.VAE"}}], ids=["class_path", "instantiator", "nested"])
def test_a_checkpoint_naming_a_module_is_refused_before_it_is_imported(naming, tmp_path, capsys, edits):
    make, marker = naming
    path = make(**edits)
    with pytest.raises(ValueError, match="it was not loaded and nothing it names was imported"):
        read_checkpoint(path)
    for subcommand in ("test", "fit", "validate", "predict"):
        with pytest.raises(SystemExit):
            cli(command(subcommand, tmp_path, f"--ckpt_path={path}"))
        message = capsys.readouterr().err.strip().splitlines()[-1]
        assert str(path) in message and "payload." in message and "was not loaded" in message
    with pytest.raises((ValueError, TypeError)):  # Lightning's allowlist, or the unknown argument
        VAE.load_from_checkpoint(path)
    assert not marker.exists()


def test_this_projects_own_classes_are_read(naming):
    make, marker = naming
    for class_path in ("lit_vae.VAE", "lit_vae.baselines.WakeSleep", "lit_vae.model.VAE"):
        assert read_checkpoint(make(_class_path=class_path))["hyper_parameters"]["_class_path"] == class_path
    assert not marker.exists()
