"""A checkpoint file is data, never code: one whose unpickling would run code is refused by
``fit``, ``test`` and ``load_from_checkpoint``, and the code does not run."""

import pickle

import pytest
import torch

from lit_vae import VAE
from lit_vae.callbacks.checkpoint import read_checkpoint
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

