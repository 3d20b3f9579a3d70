"""What several test modules share: the checkout's paths, the CLI driven in-process, and reading
what a run left behind. (Fixtures are in conftest.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from lit_vae.cli import VAECLI, cli

REPO = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """``$LIT_VAE_DATA_DIR``, else the ``shared/data`` folder beside the checkout."""
    return Path(os.environ.get("LIT_VAE_DATA_DIR", REPO.parent / "shared" / "data")).resolve()


def fit(tmp_path: Path, data_dir: Path, *args: str, config: str = "mnist.yaml") -> VAECLI:
    """``train.py fit --config configs/<config>`` logging under ``tmp_path/runs``."""
    return cli([
        "fit", "--config", str(REPO / "configs" / config),
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        f"--data.init_args.data_dir={data_dir}",
        "--progress_bar.refresh_rate=0", "--trainer.enable_model_summary=false",
        *args,
    ])


def train_process(subcommand: str, *args: str, config: str = "mnist.yaml", cwd: Path = REPO, timeout: float = 300,
                  **popen: object) -> subprocess.CompletedProcess:
    """``python train.py <subcommand> --config configs/<config> <args>`` in a process of its own
    (one torch thread), its output captured as text: for what only a process shows (exit
    status, signals, resource limits, DDP)."""
    return subprocess.run([sys.executable, str(REPO / "train.py"), subcommand, "--config", str(REPO / "configs" / config), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, **popen)  # type: ignore[call-overload]


def evaluate(save_dir: Path, data_dir: Path, checkpoint: Path | str, *args: str, config: str = "mnist.yaml") -> VAECLI:
    """``train.py test`` of ``checkpoint``, logging under ``save_dir``."""
    return cli([
        "test", "--config", str(REPO / "configs" / config), f"--data.init_args.data_dir={data_dir}",
        f"--trainer.logger.init_args.save_dir={save_dir}", "--progress_bar.refresh_rate=0",
        f"--ckpt_path={checkpoint}", *args,
    ])


def load(checkpoint: Path) -> dict:
    return torch.load(checkpoint, weights_only=True)


def parameters(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load(checkpoint)["state_dict"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: to check that nothing was written or changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class SignalAt(pl.Callback):
    """Sends ``signum`` (SIGINT: 2, SIGTERM: 15) to its own process at the end of training step
    ``step``, as Ctrl-C or a scheduler would while that step's hooks run."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: object, batch: object,
                           batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
