"""Fault injection: a real MNIST run killed with SIGKILL at random moments, resumed each time.

    python benchmarks/faults.py                # 5 kills over 10^6 samples of configs/mnist.yaml

1. ``train.py fit --config configs/mnist.yaml`` to ``--samples`` training samples, uninterrupted.
2. The same run, started and then killed (SIGKILL from outside: no handler runs, nothing is
   flushed) at ``--kills`` random moments, each time after its newest checkpoint has appeared
   and at a uniformly random time within the next ``--window`` seconds (so a kill can land
   anywhere: in a step, in an evaluation, while a checkpoint is being written), then resumed
   with ``--ckpt_path last``; after the last kill it runs to the end.
3. Prints where each kill struck (the step of the checkpoint the resume started from), whether
   the final parameters are identical, and whether the logged curves (as TensorBoard shows
   them) are identical, point for point.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lit_vae.events import read_scalars  # noqa: E402


class KillAt(pl.Callback):
    """SIGKILL to its own process at the start of training step ``step``: no handler, no flush,
    no cleanup, as the out-of-memory killer or a pre-empted node does it."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def command(runs: Path, steps: int, data_dir: str, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs" / "mnist.yaml"),
            f"--trainer.max_steps={steps}", f"--trainer.logger.init_args.save_dir={runs}",
            f"--data.init_args.data_dir={data_dir}", "--progress_bar.refresh_rate=0", *extra]


def run_with_kills(runs: Path, steps: int, data_dir: str, kills: int, window: float, rng: random.Random, env: dict,
                   *args: str) -> list[int]:
    """Start, kill ``kills`` times, resume each time, finish; returns the step each resume started from."""
    checkpoints = runs / "mnist_nz20" / "version_0" / "checkpoints"
    resumed_from = []
    for kill in range(kills + 1):
        extra = (*args, "--ckpt_path=last") if kill else args
        if kill:
            resumed_from.append(torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)["global_step"])
        before = (checkpoints / "last.ckpt").stat().st_mtime if kill else 0.0
        process = subprocess.Popen(command(runs, steps, data_dir, *extra), cwd=REPO, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kill == kills:
            break
        # wait for a checkpoint newer than the one resumed from, then strike at a random moment
        while process.poll() is None and not ((checkpoints / "last.ckpt").exists()
                                               and (checkpoints / "last.ckpt").stat().st_mtime > before):
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, window))
        if process.poll() is not None:
            raise SystemExit("the run finished before the kill: use more --samples or a shorter --window")
        process.send_signal(signal.SIGKILL)
        process.wait()
    if process.wait() != 0:
        raise SystemExit(f"the final resumed run failed with exit code {process.returncode}")
    return resumed_from


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1_000_000, help="training samples of each run (M = 100)")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--window", type=float, default=8.0, help="seconds after a new checkpoint within which to kill")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="--checkpoint.every_n_train_steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=os.environ.get("LIT_VAE_DATA_DIR", "data"))
    args = parser.parse_args()
    steps = args.samples // 100
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    every = f"--checkpoint.every_n_train_steps={args.checkpoint_every}"
    with tempfile.TemporaryDirectory() as tmp:
        whole, parts = Path(tmp) / "whole", Path(tmp) / "parts"
        subprocess.run(command(whole, steps, args.data_dir, every), cwd=REPO, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        resumed_from = run_with_kills(parts, steps, args.data_dir, args.kills, args.window, random.Random(args.seed), env, every)
        run = Path("mnist_nz20") / "version_0"
        a = torch.load(whole / run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        b = torch.load(parts / run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        same_parameters = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        curves_a, curves_b = read_scalars(whole / run), read_scalars(parts / run)
        same_curves = curves_a == curves_b
        differences = [f"  {tag}: uninterrupted {curves_a.get(tag)}\n  {tag}: killed      {curves_b.get(tag)}"
                       for tag in sorted(curves_a.keys() | curves_b.keys()) if curves_a.get(tag) != curves_b.get(tag)]
        points = sum(len(v) for v in curves_b.values())
        leftovers = sorted(p.name for p in (parts / run / "checkpoints").iterdir() if p.name.startswith("."))
    print(f"{args.kills} SIGKILLs over {args.samples:,} samples of configs/mnist.yaml (checkpoint every "
          f"{args.checkpoint_every} steps); resumed from steps {resumed_from}")
    print(f"final parameters identical to the uninterrupted run: {same_parameters}")
    print(f"logged curves identical, point for point ({points} points): {same_curves}")
    for difference in differences:
        print(difference)
    print(f"temporary checkpoint files left behind: {leftovers or 'none'}")


if __name__ == "__main__":
    main()
