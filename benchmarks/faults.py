"""Fault injection: a real MNIST run killed with SIGKILL again and again, resumed each time;
or a whole sweep whose workers and sweep process are killed at random.

    python benchmarks/faults.py                # 10 kills over 10^6 samples of configs/mnist.yaml
    python benchmarks/faults.py --sweep        # 4 runs of lit-vae reproduce, 8 kills, then finished

1. ``train.py fit --config configs/mnist.yaml`` to ``--samples`` training samples, uninterrupted,
   with a validation after every second epoch (``--validate-every 2``) and a checkpoint at every
   third epoch end (``--checkpoint-every 1500``): checkpoints on epoch ends (where Lightning's own
   counters lag after a resume), alternately before an epoch that ends with a validation and one
   that does not, and up to three epochs apart, so that a kill can lose several epochs with a
   validation among them.
2. The same run, killed ``--kills`` times and resumed with ``--ckpt_path last`` after each kill.
   The kill points are drawn at random: ``--kills`` distinct training steps, uniform over the
   whole run (``random.Random(--seed).sample``), sorted. At each, the process sends itself
   SIGKILL at the start of that step (``KillAt``: no handler runs, nothing is flushed), so a
   kill lands anywhere in the run's schedule: mid-epoch, right after an epoch end, after a
   validation, several epochs past the checkpoint it will resume from, or before the first.
3. Prints each kill (its step and epoch, the checkpoint the resume started from, whether a
   validation lay in between), whether the final parameters and Adagrad state are identical, and
   whether every logged point (as TensorBoard shows it: tags, steps and values) is identical.

With ``--sweep``: ``lit-vae reproduce`` of 4 small Frey Face runs (AEVB and wake-sleep, 2 seeds,
hidden 50, 2 workers), once uninterrupted and once with ``--kills`` SIGKILLs at random times
(``random.Random(--seed)``), each of a random training process of the sweep or of the sweep's
own process (its runs die with it), the same command started again after each; then the same
command until done. Prints each kill and whether every run's final parameters and Adagrad state
are identical to the uninterrupted sweep's.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lit_vae.events import read_scalars  # noqa: E402


def command(runs: Path, steps: int, data_dir: str, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs" / "mnist.yaml"),
            f"--trainer.max_steps={steps}", f"--trainer.logger.init_args.save_dir={runs}",
            f"--data.init_args.data_dir={data_dir}", "--progress_bar.refresh_rate=0", *extra]


def run_with_kills(runs: Path, steps: int, data_dir: str, kill_steps: list[int], env: dict, *args: str) -> list[int]:
    """Start, kill at each of ``kill_steps``, resume each time, finish; returns the step each resume
    started from (0: the kill came before the first checkpoint, and the run was started over, as
    ``--ckpt_path last`` then tells the user to do)."""
    checkpoints = runs / "mnist_nz20" / "version_0" / "checkpoints"
    resumed_from = []
    for i, kill in enumerate([*kill_steps, None]):
        steps_held = [torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"]
                      for path in checkpoints.glob("*.ckpt")]
        if i:
            resumed_from.append(max(steps_held, default=0))
        if steps_held:
            extra = [*args, "--ckpt_path=last"]
        else:  # nothing to resume: start over in the same folder
            shutil.rmtree(runs, ignore_errors=True)
            extra = list(args)
        if kill is not None:
            extra += ["--trainer.callbacks+=lit_vae.callbacks.faults.KillAt", f"--trainer.callbacks.step={kill}"]
        code = subprocess.run(command(runs, steps, data_dir, *extra), cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        if kill is not None and code != -signal.SIGKILL:
            raise SystemExit(f"the run meant to be killed at step {kill} ended with exit code {code}")
    if code != 0:
        raise SystemExit(f"the final resumed run failed with exit code {code}")
    return resumed_from


def same_state(a: dict, b: dict) -> bool:
    """Bit-identical parameters and optimizer state."""
    (sa,), (sb,) = a["optimizer_states"], b["optimizer_states"]
    parameters = a["state_dict"].keys() == b["state_dict"].keys() and all(
        torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    return parameters and all(torch.equal(sa["state"][i][k], sb["state"][i][k]) for i in sa["state"] for k in sa["state"][i])


SWEEP = {"runs": [
    {"name": name, "figure": 2, "panel": "frey_face_nz2", "config": config, "samples": 100_000,
     "args": {"model.init_args.latent_dim": 2, "model.init_args.hidden_dim": 50}}
    for name, config in (("aevb", "frey_face"), ("wake_sleep", "figure2_wake_sleep_frey_face"))]}


def sweep_with_kills(folder: Path, kills: int, seed: int, env: dict) -> None:
    """The ``--sweep`` benchmark (see the module's docstring)."""
    import yaml

    from lit_vae import sweep
    from lit_vae.run_folder import RunVersions

    manifest = folder / "manifest.yaml"
    manifest.write_text(yaml.safe_dump(SWEEP))

    def reproduce(out: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "lit_vae", "reproduce", "--manifest", str(manifest), "--seeds", "2",
                                 "--workers", "2", "--out", str(out)], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    started = time.perf_counter()
    if reproduce(folder / "whole").wait() != 0:
        raise SystemExit("the uninterrupted sweep failed")
    rng = random.Random(seed)
    out = folder / "killed"
    for kill in range(kills):
        process = reproduce(out)
        time.sleep(rng.uniform(6.0, 30.0))
        workers = [int(pid) for pid in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()]
        if process.poll() is not None:
            print(f"  kill {kill + 1}: the sweep had already finished")
            continue
        victim, what = (rng.choice(workers), "a training process") if workers and rng.random() < 0.5 else (process.pid, "the sweep")
        os.kill(victim, signal.SIGKILL)
        process.wait()
        time.sleep(0.5)  # a killed sweep's runs die with it (PR_SET_PDEATHSIG)
        plans = [sweep.Plan(spec, spec.samples, out, s, 1) for spec in sweep.load_manifest(manifest) for s in (1, 2)]
        states = ", ".join(f"{p.name} {sweep.status(p).samples:,}" for p in plans)
        print(f"  kill {kill + 1}: SIGKILL to {what} (PID {victim}); samples saved: {states}")
    attempts = 0
    while reproduce(out).wait() != 0:  # a run killed last is retried by the same command
        attempts += 1
        if attempts > 3:
            raise SystemExit("the killed sweep did not finish")
    identical = []
    for spec in sweep.load_manifest(manifest):
        for s in (1, 2):
            name = spec.name if s == 1 else f"{spec.name}_seed{s}"
            a, b = (torch.load(RunVersions(root / name).resume_checkpoint(), weights_only=True) for root in (folder / "whole", out))
            identical.append(same_state(a, b) and a["global_step"] == b["global_step"])
            print(f"  {name}: final parameters and Adagrad state identical to the uninterrupted sweep's: {identical[-1]}")
    print(f"{sum(identical)} of {len(identical)} runs identical after {kills} kills; {time.perf_counter() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1_000_000, help="training samples of each run (M = 100)")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--checkpoint-every", type=int, default=1500, help="--checkpoint.every_n_train_steps")
    parser.add_argument("--validate-every", type=int, default=2, help="--trainer.check_val_every_n_epoch")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=os.environ.get("LIT_VAE_DATA_DIR", "data"))
    parser.add_argument("--sweep", action="store_true", help="kill the workers and the process of a sweep instead (--kills 8)")
    args = parser.parse_args()
    if args.sweep:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "LIT_VAE_DATA_DIR": str(Path(args.data_dir).resolve())}
        with tempfile.TemporaryDirectory() as tmp:
            print(f"a sweep of 4 runs, {args.kills} SIGKILLs at random (seed {args.seed}):")
            sweep_with_kills(Path(tmp), args.kills, args.seed, env)
        return
    steps = args.samples // 100
    kill_steps = sorted(random.Random(args.seed).sample(range(1, steps), args.kills))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    settings = (f"--checkpoint.every_n_train_steps={args.checkpoint_every}", f"--trainer.check_val_every_n_epoch={args.validate_every}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        whole, parts = Path(tmp) / "whole", Path(tmp) / "parts"
        subprocess.run(command(whole, steps, args.data_dir, *settings), cwd=REPO, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        resumed_from = run_with_kills(parts, steps, args.data_dir, kill_steps, env, *settings)
        run = Path("mnist_nz20") / "version_0"
        a = torch.load(whole / run / "checkpoints" / "last.ckpt", weights_only=True)
        b = torch.load(parts / run / "checkpoints" / "last.ckpt", weights_only=True)
        curves_a, curves_b = read_scalars(whole / run), read_scalars(parts / run)
        differences = [f"  {tag}: uninterrupted {curves_a.get(tag)}\n  {tag}: killed      {curves_b.get(tag)}"
                       for tag in sorted(curves_a.keys() | curves_b.keys()) if curves_a.get(tag) != curves_b.get(tag)]
        points = sum(len(v) for v in curves_b.values())
        validations = [step // 100 for step, _ in curves_a.get("lower_bound/validation", [])]
        leftovers = sorted(p.name for p in (parts / run / "checkpoints").iterdir() if p.name.startswith("."))
        names_a, names_b = (sorted(p.name for p in (root / run / "checkpoints").glob("*.ckpt")) for root in (whole, parts))
    steps_per_epoch = 50_000 // 100
    print(f"{args.kills} SIGKILLs over {args.samples:,} samples of configs/mnist.yaml (checkpoint every {args.checkpoint_every} "
          f"steps, validation every {args.validate_every} epochs of {steps_per_epoch} steps), kill steps drawn with seed {args.seed}:")
    for kill, start in zip(kill_steps, resumed_from):
        epoch, batch = divmod(kill, steps_per_epoch)
        after = [v for v in validations if start < v <= kill]
        passed = f", past the validations at steps {after}" if after else ""
        print(f"  killed at step {kill} (epoch {epoch}, {batch} steps in), "
              + (f"resumed from the step-{start} checkpoint" if start else "before the first checkpoint: started over")
              + f" ({kill - start} steps lost{passed})")
    print(f"final parameters and Adagrad state identical to the uninterrupted run: {same_state(a, b)}")
    position = [(c["epoch"], c["global_step"], c["loops"]) for c in (a, b)]
    print(f"loop position identical (epoch, step, Lightning's loop state): {position[0] == position[1]}")
    print(f"checkpoint files identical by name: {names_a == names_b} ({names_b})")
    print(f"logged curves identical, point for point ({points} points): {not differences}")
    for difference in differences:
        print(difference)
    print(f"temporary checkpoint files left behind: {leftovers or 'none'}")
    print(f"wall-clock time of both runs: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
