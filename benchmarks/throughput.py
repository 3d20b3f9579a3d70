"""Training throughput: a plain PyTorch eager loop against ``train.py fit``, side by side.

    python benchmarks/throughput.py            # 2 threads, MNIST 784-500-20, M = 100

1. Plain loops: the same networks and estimator (Eq. 7), minibatches sliced from the in-memory
   training tensor, no Lightning, no evaluation, no logging; once with torch's default Adagrad
   and once with the fused CPU kernel that ``VAE`` uses (the like-for-like comparison).
2. A bare Lightning ``Trainer`` in this process: the same ``VAE`` and data module, no logger,
   checkpoints, progress bar, callbacks or validation; it shows what Lightning's training loop
   alone costs against the plain loop.
3. ``train.py fit --config configs/mnist.yaml`` in a subprocess, unchanged: progress bar,
   periodic test evaluation, checkpoints. Steady-state speed is read from the wall times that
   TensorBoard stores with each ``lower_bound/train`` point (one per epoch), so start-up and
   the first epoch are left out and nothing is instrumented.
4. The same with ``--model lit_vae.baselines.WakeSleep`` (the wake-sleep baseline on the same
   networks).
5. The baselines against AEVB where the paper compares all three (Figure 3: 784-100-3 on
   N = 1,000): ``configs/figure3_n1000{,_wake_sleep,_mcem}.yaml`` unchanged except that the
   marginal likelihood is not evaluated during training. Steady-state speed is the difference of
   two runs, k and 2k minibatches long: k M / (t(2k) - t(k)), so start-up cancels.
6. Frey Face (``--sections frey``): the plain loop of the 560-200-10 Gaussian model against a
   bare Trainer (as in 2) and ``train.py fit --config configs/frey_face.yaml`` (read as in 3).
   Its epochs are 16 minibatches, so what Lightning and the callbacks cost per epoch shows here.
   Last, the bare Trainer on a one-parameter module: Lightning's own cost per step, which no
   change of ours can remove.
7. The sweep (``--sections sweep``): ``lit-vae reproduce``'s local pool running W copies of the
   MNIST Nz = 20 run at once, one torch thread each, against one such run alone. Each run's rate
   is its samples over its training seconds (``progress.json``, start-up left out); the sweep's
   aggregate is their sum.
8. The dashboard's cost (``--sections logging``): ``train.py fit --config configs/mnist.yaml``
   (read as in 3) of this checkout against the same command in a git worktree of ``--without``
   (default ``f90d8aa``, the commit before the dashboard work added the bound's terms, active units, the KL
   histogram, the Custom Scalars layout and the HPARAMS tab), alternated ``--repeats`` times so
   that drift in the machine's load falls on both; medians.

9. The shell's cost (``--sections shell``): a bare ``Trainer`` (as in 2) against ``train.py fit``
   run in this process as a user runs it, on the same ``VAE`` and data module, MNIST and Frey
   Face, both timed by the same callback from step 1,000 (10^5 samples) to the end of the last step
   (10^6 samples later; the test evaluations and pictures due in between included), alternated
   ``--repeats`` times. Read two ways: over the whole window, and as the median of its chunks of
   100 steps (the rate between due evaluations, robust to a stall of the machine's on a few
   chunks). Then Lightning's ``SimpleProfiler`` on a fit: what each of our callbacks' hooks
   costs, per call and in all.

Peak memory is the subprocess's maximum resident set size.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lit_vae import VAE, launch, sgvb_b, sweep  # noqa: E402
from lit_vae.cli import VAECLI, cli  # noqa: E402
from lit_vae.datamodules import FreyFaceDataModule, MNISTDataModule  # noqa: E402
from lit_vae.events import read_events  # noqa: E402
from lit_vae.networks import DECODERS, GaussianMLPEncoder, init_normal_  # noqa: E402


def plain_loop(data: torch.Tensor, steps: int, warmup: int, batch_size: int = 100, hidden_dim: int = 500,
               latent_dim: int = 20, fused: bool = True, likelihood: str = "bernoulli") -> float:
    """Samples per second of a hand-written AEVB loop (Algorithm 1) over ``steps`` minibatches,
    with the fused Adagrad kernel (as ``VAE`` uses on the CPU) or torch's default one."""
    torch.manual_seed(0)
    dim = data.shape[1]
    encoder, decoder = GaussianMLPEncoder(dim, hidden_dim, latent_dim), DECODERS[likelihood](latent_dim, hidden_dim, dim)
    params = [*encoder.parameters(), *decoder.parameters()]
    for module in (encoder, decoder):
        init_normal_(module, 0.01)
    optimizer = torch.optim.Adagrad(params, lr=0.02, eps=1e-8, weight_decay=1 / len(data), fused=fused)

    def log_likelihood(x, z):
        return decoder.log_prob(x, decoder(z))

    order = torch.randperm(len(data))
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        i = (step * batch_size) % len(data)
        x = data.index_select(0, order[i : i + batch_size])  # as TensorBatches serves minibatches
        mu, logvar = encoder(x)
        bound = sgvb_b(x, mu, logvar, torch.randn(1, len(x), latent_dim), log_likelihood)
        optimizer.zero_grad(set_to_none=True)
        (-bound.mean()).backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - start)


class StepTimer(pl.Callback):
    """Wall time from the start of training step ``warmup`` to the end of the last step (the
    work of the other callbacks at that step included, the end of the fit not), and the time
    of each ``chunk`` steps in between (:meth:`steady_rate`)."""

    def __init__(self, warmup: int, chunk: int = 100) -> None:
        self.warmup, self.chunk = warmup, chunk
        self.start = self.seconds = 0.0
        self.steps = 0
        self.marks: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()
            self.marks = [self.start]

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step > self.warmup and (step - self.warmup) % self.chunk == 0:
            self.marks.append(time.perf_counter())
        if step >= trainer.max_steps:
            self.seconds, self.steps = time.perf_counter() - self.start, step - self.warmup

    def rate(self, batch_size: int = 100) -> float:
        """Samples per second over the whole timed window."""
        return self.steps * batch_size / self.seconds

    def steady_rate(self, batch_size: int = 100) -> float:
        """Samples per second of the median chunk: the rate between the due evaluations, and
        untouched by a stall of the machine's that falls on a few chunks."""
        return self.chunk * batch_size / statistics.median(b - a for a, b in zip(self.marks, self.marks[1:]))


class OneParameter(pl.LightningModule):
    """A module whose step costs next to nothing: under ``bare_trainer`` it shows what Lightning's
    automatic-optimization loop costs per step on its own."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return 2 * self.w.sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def bare_trainer(data: pl.LightningDataModule, steps: int, warmup: int, model: pl.LightningModule | None = None) -> float:
    """Samples per second of :func:`bare_timer`'s fit."""
    return bare_timer(data, steps, warmup, model).rate()


def bare_timer(data: pl.LightningDataModule, steps: int, warmup: int, model: pl.LightningModule | None = None) -> StepTimer:
    """The timer of ``Trainer.fit`` on ``model`` (default: the MNIST ``VAE``, fused
    Adagrad, as in ``train.py``) with nothing but the training loop: no logger, checkpoints,
    progress bar, summary or validation."""
    pl.seed_everything(0, verbose=False)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banners between the lines
    timer = StepTimer(warmup)
    warnings.filterwarnings("ignore", module="lightning")
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=warmup + steps, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(VAE() if model is None else model, data)
    return timer


def fit_in_process(config: str, steps: int, warmup: int, data_dir: str, *extra: str) -> tuple[float, VAECLI]:
    """Samples per second of ``train.py fit --config configs/<config>`` run in this process (its
    progress bar, logger, checkpoints, evaluations and pictures, as a user runs it), timed as
    :func:`bare_trainer` times the bare loop: from step ``warmup`` to the end of the last step."""
    with tempfile.TemporaryDirectory() as runs, contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        ran = cli(["fit", "--config", str(REPO / "configs" / config), f"--trainer.max_steps={warmup + steps}",
                   f"--trainer.logger.init_args.save_dir={runs}", f"--data.init_args.data_dir={data_dir}",
                   "--trainer.callbacks+=benchmarks.throughput.StepTimer", f"--trainer.callbacks.init_args.warmup={warmup}", *extra])
    (timer,) = [c for c in ran.trainer.callbacks if type(c).__name__ == "StepTimer"]
    return timer.rate(), ran


def shell_cost(data: pl.LightningDataModule, model: Callable[[], pl.LightningModule], config: str, steps: int, warmup: int,
               data_dir: str, repeats: int) -> tuple[list[StepTimer], list[StepTimer]]:
    """The timers of a bare Trainer and of ``train.py fit`` on the same model and data,
    alternated ``repeats`` times so that drift in the machine's load falls on both."""
    bare, fit = [], []
    for _ in range(repeats):
        bare.append(bare_timer(data, steps, warmup, model()))
        _, ran = fit_in_process(config, steps, warmup, data_dir)
        fit.extend(c for c in ran.trainer.callbacks if type(c).__name__ == "StepTimer")  # the CLI's import of this file
    return bare, fit


def callback_costs(config: str, steps: int, data_dir: str) -> tuple[list[tuple[str, float, int, float]], float]:
    """(hook, total seconds, calls, median seconds a call) of each of our callbacks' hooks in a
    ``train.py fit`` of ``steps`` steps, from Lightning's ``SimpleProfiler``, largest first; and
    the median seconds of the same fit's training batch (``run_training_batch``: forward,
    backward, update), against which a hook's median per step is its cost between due points."""
    _, ran = fit_in_process(config, steps, 0, data_dir, "--trainer.profiler=simple")
    recorded = ran.trainer.profiler.recorded_durations
    costs = [(action.removeprefix("[Callback]"), sum(durations), len(durations), statistics.median(durations))
             for action, durations in recorded.items() if action.startswith("[Callback]") and "StepTimer" not in action]
    return sorted(costs, key=lambda cost: -cost[1]), statistics.median(recorded["run_training_batch"])


def train(config: str, steps: int, threads: int, data_dir: str, runs: str, *extra: str, repo: Path = REPO) -> float:
    """Run ``train.py fit --config configs/<config>`` of the checkout ``repo`` (its own
    ``lit_vae``: the script's folder comes first on the path) for ``steps`` steps; returns its wall time."""
    command = [
        sys.executable, str(repo / "train.py"), "fit", "--config", str(repo / "configs" / config),
        f"--trainer.max_steps={steps}", f"--trainer.logger.init_args.save_dir={runs}",
        f"--data.init_args.data_dir={data_dir}", *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def lightning_fit(epochs: int, threads: int, data_dir: str, *extra: str, config: str = "mnist.yaml",
                  steps_per_epoch: int = 500, repo: Path = REPO) -> tuple[float, float]:
    """(samples per second from the second epoch end to the last, peak RSS in MiB) of ``train.py fit``."""
    with tempfile.TemporaryDirectory() as runs:
        train(config, epochs * steps_per_epoch, threads, data_dir, runs, *extra, repo=repo)
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        epoch_ends = read_events(runs)["lower_bound/train"]
        first, last = epoch_ends[1], epoch_ends[-1]
        return (last.step - first.step) / (last.wall_time - first.wall_time), peak_mib


def steady_rate(config: str, minibatches: int, threads: int, data_dir: str, steps_per_batch: int = 1) -> float:
    """Training samples per second of ``config`` from the difference of a ``minibatches`` and a
    2 x ``minibatches`` run (M = 100), without the marginal likelihood during training."""
    with tempfile.TemporaryDirectory() as runs:
        short, long = (train(config, k * minibatches * steps_per_batch, threads, data_dir, runs,
                             "--marginal_likelihood.during_fit=false") for k in (1, 2))
    return minibatches * 100 / (long - short)


def sweep_rates(workers: int, samples: int, data_dir: str) -> list[float]:
    """Samples per second of each of ``workers`` copies of the MNIST Nz = 20 run trained at once
    by the sweep's local pool, one torch thread each."""
    with tempfile.TemporaryDirectory() as folder:
        manifest = Path(folder) / "manifest.yaml"
        runs = [{"name": f"copy{i}", "figure": 2, "panel": "mnist_nz20", "config": "mnist", "samples": samples,
                 "args": {"data.init_args.data_dir": data_dir}} for i in range(workers)]
        manifest.write_text(yaml.safe_dump({"runs": runs}))
        plans = [sweep.Plan(spec, samples, Path(folder) / "out", 1, 1) for spec in sweep.load_manifest(manifest)]
        with open(os.devnull, "w") as quiet:
            launch.run_local(plans, workers, report=quiet)
        return [sweep.status(plan).folder.progress()["samples_per_second"] for plan in plans]


@contextlib.contextmanager
def revision(rev: str) -> Iterator[Path]:
    """A temporary git worktree of this checkout at ``rev``."""
    with tempfile.TemporaryDirectory() as folder:
        tree = Path(folder) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(tree), rev], check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=True)


SECTIONS = ("fit", "baselines", "frey", "sweep", "logging", "shell")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20, help="epochs of 500 steps for each Lightning run")
    parser.add_argument("--data-dir", default=os.environ.get("LIT_VAE_DATA_DIR", "data"))
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="what to measure: MNIST's loops and fits, the baselines, Frey Face, the sweep (default: all)")
    parser.add_argument("--no-baselines", action="store_true", help="all sections but the baselines")
    parser.add_argument("--baselines-only", action="store_true", help="only AEVB's fit and the baselines against it")
    parser.add_argument("--baseline-batches", type=int, default=2000, help="k, minibatches of the shorter baseline run")
    parser.add_argument("--frey-epochs", type=int, default=400, help="epochs of 16 steps for Frey Face's fit")
    parser.add_argument("--sweep-workers", type=int, default=2, help="W, runs at once in the sweep")
    parser.add_argument("--sweep-samples", type=int, default=2_000_000, help="training samples of each sweep run")
    parser.add_argument("--without", default="f90d8aa", help="the revision before the dashboard's logging (--sections logging)")
    parser.add_argument("--repeats", type=int, default=3, help="fits of each revision (--sections logging), or of bare "
                        "Trainer and fit (--sections shell), alternated")
    parser.add_argument("--shell-configs", nargs="+", choices=("mnist", "frey_face"), default=["mnist", "frey_face"],
                        help="the configs whose shell cost is measured (--sections shell)")
    parser.add_argument("--shell-steps", type=int, default=10_000, help="timed steps of each run (--sections shell)")
    parser.add_argument("--shell-warmup", type=int, default=1_000, help="untimed steps first (--sections shell): the "
                        "log-spaced evaluations are dense at the start, as a decade of samples takes a tenth of the next's time")
    args = parser.parse_args()
    sections = set(args.sections) - ({"baselines"} if args.no_baselines else set())
    if args.baselines_only:
        sections = {"fit", "baselines"}
    torch.set_num_threads(args.threads)
    if "frey" in sections:
        frey = FreyFaceDataModule(data_dir=args.data_dir, download=False)
        frey.setup()
        steps = (args.frey_epochs - 2) * 16
        plain = plain_loop(frey.splits["train"], steps=steps, warmup=200, hidden_dim=200, latent_dim=10, likelihood="gaussian")
        print(f"Frey Face 560-200-10, plain loop, fused Adagrad  {plain:9.0f} samples/s  ({1e5 / plain:.2f} ms a step)", flush=True)
        model = VAE(input_dim=frey.input_dim, hidden_dim=200, latent_dim=10, likelihood="gaussian", train_size=1600)
        bare = bare_trainer(frey, steps, 200, model)
        print(f"Frey Face, bare Lightning Trainer                {bare:9.0f} samples/s  = {bare / plain:.2f} x plain", flush=True)
        fit, _ = lightning_fit(args.frey_epochs, args.threads, args.data_dir, config="frey_face.yaml", steps_per_epoch=16)
        print(f"Frey Face, train.py fit                          {fit:9.0f} samples/s  = {fit / plain:.2f} x plain"
              f"  ({1e5 / fit - 1e5 / plain:.2f} ms a step more)", flush=True)
        floor = bare_trainer(frey, steps, 200, OneParameter())
        print(f"Lightning's loop alone (a one-parameter module)  {1e5 / floor:9.2f} ms a step", flush=True)
    if "shell" in sections:
        mnist = MNISTDataModule(data_dir=args.data_dir, download=False)
        frey = FreyFaceDataModule(data_dir=args.data_dir, download=False, split="numpy_shuffle")
        for name, data, model, config, steps in (
                ("MNIST 784-500-20", mnist, VAE, "mnist.yaml", args.shell_steps),
                ("Frey Face 560-200-10", frey, lambda: VAE(input_dim=560, hidden_dim=200, latent_dim=10, likelihood="gaussian",
                                                           train_size=1600), "frey_face.yaml", args.shell_steps)):
            if config.removesuffix(".yaml") not in args.shell_configs:
                continue
            bare_timers, fit_timers = shell_cost(data, model, config, steps, args.shell_warmup, args.data_dir, args.repeats)
            for kind, rate in (("whole window", StepTimer.rate), ("median chunk", StepTimer.steady_rate)):
                bare, fit = [rate(t) for t in bare_timers], [rate(t) for t in fit_timers]
                b, f = statistics.median(bare), statistics.median(fit)
                print(f"{name}, {kind}: bare Trainer {b:9.0f} samples/s, train.py fit {f:9.0f} samples/s = {f / b:.3f} x bare"
                      f"  (medians of {args.repeats}; bare / fit: {', '.join(f'{x:.0f} / {y:.0f}' for x, y in zip(bare, fit))})",
                      flush=True)
            costs, batch = callback_costs(config, steps, args.data_dir)
            total = steps * 100 / statistics.median(t.rate() for t in fit_timers)
            print(f"  our callbacks' hooks over {steps:,} steps of fit (SimpleProfiler; the fit takes about {total:.1f} s;"
                  f" a training batch's median {1e6 * batch:.0f} us):")
            for hook, seconds, calls, median in costs[:8]:
                print(f"    {hook:<58} {1e3 * seconds:8.1f} ms in {calls:6,} calls = {1e6 * seconds / calls:7.1f} us a call"
                      f" (median {1e6 * median:6.1f} us)", flush=True)
            per_step = sum(median for hook, _, calls, median in costs if calls >= steps)
            print(f"  hooks called every step, their medians together: {1e6 * per_step:.0f} us a step ="
                  f" {per_step / batch:.1%} of a training batch", flush=True)
    if "sweep" in sections:
        (alone,) = sweep_rates(1, args.sweep_samples, args.data_dir)
        rates = sweep_rates(args.sweep_workers, args.sweep_samples, args.data_dir)
        print(f"sweep, 1 run alone, 1 thread                     {alone:9.0f} samples/s", flush=True)
        print(f"sweep, {args.sweep_workers} runs at once, 1 thread each            {sum(rates):9.0f} samples/s  = "
              f"{sum(rates) / alone:.2f} x one run alone  (per run: {', '.join(f'{r:.0f}' for r in rates)})", flush=True)
    if "logging" in sections:
        rates: dict[str, list[float]] = {"this checkout": [], args.without: []}
        with revision(args.without) as before:
            for _ in range(args.repeats):
                rates["this checkout"].append(lightning_fit(args.epochs, args.threads, args.data_dir)[0])
                rates[args.without].append(lightning_fit(args.epochs, args.threads, args.data_dir, repo=before)[0])
        now, then = (statistics.median(r) for r in rates.values())
        for name, rate in zip(rates, (now, then)):
            print(f"train.py fit, {name + ':':<22} {rate:9.0f} samples/s  (median of {', '.join(f'{r:.0f}' for r in rates[name])})")
        print(f"the dashboard's logging costs {100 * (1 - now / then):+.1f}% of fit throughput", flush=True)
    if "fit" not in sections:
        return

    if not args.baselines_only:
        data = MNISTDataModule(data_dir=args.data_dir, download=False)
        data.setup()
        steps = (args.epochs - 2) * 500
        reference = plain_loop(data.splits["train"], steps=steps, warmup=200, fused=False)
        plain = plain_loop(data.splits["train"], steps=steps, warmup=200)
        print(f"plain loop, default Adagrad  {reference:9.0f} samples/s  ({100 / reference * 1e3:.2f} ms a step)", flush=True)
        print(f"plain loop, fused Adagrad    {plain:9.0f} samples/s  ({100 / plain * 1e3:.2f} ms a step)", flush=True)
        bare = bare_trainer(data, steps=steps, warmup=200)
        print(f"bare Lightning Trainer       {bare:9.0f} samples/s  = {bare / plain:.2f} x fused plain", flush=True)
    fit, peak = lightning_fit(args.epochs, args.threads, args.data_dir)
    print(f"train.py fit (default)       {fit:9.0f} samples/s", end="", flush=True)
    print("" if args.baselines_only else f"  = {fit / plain:.2f} x fused plain, {fit / reference:.2f} x default plain"
          f"   peak RSS {peak:.0f} MiB", flush=True)
    wake_sleep, _ = lightning_fit(args.epochs, args.threads, args.data_dir, "--model=lit_vae.baselines.WakeSleep")
    print(f"train.py fit (wake-sleep)    {wake_sleep:9.0f} samples/s  = {wake_sleep / fit:.2f} x AEVB", flush=True)
    if "baselines" in sections:
        k = args.baseline_batches
        aevb = steady_rate("figure3_n1000.yaml", k, args.threads, args.data_dir)
        print(f"Figure 3 setting, 784-100-3, N = 1,000:\n  AEVB          {aevb:9.0f} samples/s", flush=True)
        for name, config, steps_per_batch in (("wake-sleep", "figure3_n1000_wake_sleep.yaml", 1),
                                              ("MCEM", "figure3_n1000_mcem.yaml", 5)):
            rate = steady_rate(config, k, args.threads, args.data_dir, steps_per_batch)
            print(f"  {name:<13} {rate:9.0f} samples/s  = {rate / aevb:.2f} x AEVB", flush=True)
    print(f"threads={args.threads} torch={torch.__version__} steady state over epochs 2-{args.epochs}")


if __name__ == "__main__":
    main()
