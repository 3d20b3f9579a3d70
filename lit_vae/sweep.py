"""The paper's experiments as a sweep of ordinary ``fit`` runs: the manifest that lists them
(``paper_runs.yaml``), the command each run is, where each stands, and the two ways to run them:
a local pool of worker processes with a fixed torch thread count each, or a SLURM array through
submitit. ``lit_vae.reproduce`` is the command line around it.

Each run is ``python -m lit_vae fit --config <config> ...`` logging to
``<out>/<name>/version_<n>/`` with its output in ``<out>/<name>/train.log``; a run that has a
checkpoint is continued with ``--ckpt_path last`` (the CLI's rule picks its newest state), so a
sweep stopped in any way continues where each run stopped, and a finished run is skipped.
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from lit_vae import runs
from lit_vae.callbacks.checkpoint import EVERY_N_TRAIN_STEPS
from lit_vae.callbacks.checkpoint_files import stored_value
from lit_vae.callbacks.progress import read_progress
from lit_vae.configs import config_file, config_names

MANIFEST = Path(__file__).with_name("paper_runs.yaml")
LOG = "train.log"
FAILED = "failed.txt"  # the exit status and time of a run's last attempt, when it failed
#: Checkpoints at the CLI's interval or ten per run, whichever is more often.
CHECKPOINTS_PER_RUN = 10
#: The seed of the shipped configs: its runs keep the manifest's names, other seeds add ``_seed<n>``.
DEFAULT_SEED = 1


@dataclass(frozen=True)
class RunSpec:
    """One run of the manifest: a shipped config with overrides, trained to ``samples``."""

    name: str
    figure: int
    panel: str
    config: str
    samples: int
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def config_path(self) -> str:
        return str(config_file(self.config))

    def settings(self) -> dict[str, Any]:
        """The run's config file with the manifest's overrides applied (what the run trains)."""
        config = yaml.safe_load(Path(self.config_path).read_text())
        for key, value in self.args.items():
            *parents, last = key.split(".")
            node = config
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        return config

    def max_steps(self, samples: int) -> int:
        """``--trainer.max_steps`` for ``samples`` training samples: minibatches of the config's
        ``batch_size``, times ``updates_per_batch`` for a model that updates more than once per
        minibatch (MCEM)."""
        config = self.settings()
        batch_size = config["data"]["init_args"]["batch_size"]
        return math.ceil(samples / batch_size) * config["model"]["init_args"].get("updates_per_batch", 1)


def load_manifest(path: str | Path = MANIFEST) -> list[RunSpec]:
    """The runs listed in the manifest at ``path``; ``ValueError`` saying what is wrong with an entry."""
    entries = (yaml.safe_load(Path(path).read_text()) or {}).get("runs") or []
    specs = []
    for i, entry in enumerate(entries):
        try:
            spec = RunSpec(**entry)
        except TypeError as error:
            raise ValueError(f"{path}: run {i + 1} ({entry}): {error}. Each run has name, figure, panel, config, samples "
                             "and optionally args.") from None
        if spec.config.removesuffix(".yaml") not in config_names():
            raise ValueError(f"{path}: run {spec.name}: no shipped config named {spec.config}")
        specs.append(spec)
    names = [spec.name for spec in specs]
    if duplicates := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError(f"{path}: run names must be unique, these repeat: {', '.join(duplicates)}")
    return specs


def select(specs: Sequence[RunSpec], figures: Sequence[int] = (), panels: Sequence[str] = (),
           names: Sequence[str] = ()) -> list[RunSpec]:
    """The runs of the given figures, panels and names (each: all where none are given);
    ``ValueError`` naming a figure, panel or run the manifest does not have."""
    chosen = {"figure": figures, "panel": panels, "name": names}
    for what, asked in chosen.items():
        have = {getattr(spec, what) for spec in specs}
        if unknown := [str(x) for x in asked if x not in have]:
            raise ValueError(f"no {what.replace('name', 'run')} {', '.join(unknown)} in the manifest; "
                             f"it has: {', '.join(map(str, sorted(have)))}")
    return [spec for spec in specs if all(not asked or getattr(spec, what) in asked for what, asked in chosen.items())]


@dataclass(frozen=True)
class Plan:
    """A run as a sweep trains it: the spec, its sample budget, where, with which seed and threads."""

    spec: RunSpec
    samples: int
    out: Path
    seed: int
    threads: int

    @property
    def name(self) -> str:
        """The run's name: the manifest's, with ``_seed<n>`` for a seed other than :data:`DEFAULT_SEED`."""
        return self.spec.name if self.seed == DEFAULT_SEED else f"{self.spec.name}_seed{self.seed}"

    @property
    def root(self) -> Path:
        """``<out>/<name>``: the run's version folders and its ``train.log``."""
        return self.out / self.name

    def command(self) -> list[str]:
        """The ``fit`` command of the run's next attempt: fresh, or continued from its checkpoint."""
        max_steps = self.spec.max_steps(self.samples)
        command = [
            sys.executable, "-m", "lit_vae", "fit", "--config", self.spec.config_path,
            f"--seed_everything={self.seed}",
            f"--trainer.max_steps={max_steps}",
            f"--trainer.logger.init_args.save_dir={self.out}",
            f"--trainer.logger.init_args.name={self.name}",
            f"--checkpoint.every_n_train_steps={max(1, min(EVERY_N_TRAIN_STEPS, max_steps // CHECKPOINTS_PER_RUN))}",
            # A cluster's pre-emption signal stops the run at a step, with its checkpoint.
            "--checkpoint.stop_signals=[SIGINT, SIGTERM, SIGUSR1, SIGUSR2]",
            "--trainer.callbacks+=lit_vae.callbacks.ProgressFile",
            "--progress_bar.refresh_rate=0",  # no bar in the log: the sweep shows one for all runs
            # The manifest's own arguments last, so that they override the sweep's defaults above.
            *(f"--{key}={value}" for key, value in self.spec.args.items()),
        ]
        if checkpoint_of(self.root) is not None:
            command.append("--ckpt_path=last")
        return command

    def environment(self) -> dict[str, str]:
        """The environment of the run's process: ``threads`` torch (OpenMP/MKL) threads, and no
        ``SLURM_*`` variables: under a SLURM job the sweep's process (submitit) alone requeues,
        and Lightning in the run must not take the job for its own (its SLURM environment would
        requeue it too and write ``hpc_ckpt_<n>.ckpt`` outside the run folder)."""
        inherited = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
        return {**inherited, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}


def checkpoint_of(root: Path) -> Path | None:
    """The checkpoint ``--ckpt_path last`` continues the run under ``root`` from; ``None`` if it
    has none (never started, or stopped before its first checkpoint: it starts afresh)."""
    try:
        return runs.resume_checkpoint(root)
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Status:
    """Where a run stands: ``state`` is one of ``done``, ``running`` (its fit, or a sweep that
    trains it, holds its lock), ``stopped`` (it continues from its checkpoint), ``ended short``
    (it finished a smaller budget than this one, and continues to it), ``failed`` (its last
    attempt exited with an error), ``not started``."""

    plan: Plan
    state: str
    samples: int  # samples evaluated by the newest process (live), else by the newest checkpoint
    folder: Path | None  # the run's newest version folder
    progress: dict[str, Any] | None


def status(plan: Plan) -> Status:
    """Where ``plan``'s run stands, read from its folder (nothing is written)."""
    folder = runs.newest_fit(plan.root)
    progress = read_progress(folder) if folder is not None else None
    checkpoint = checkpoint_of(plan.root)
    saved = int(stored_value(checkpoint, "samples_evaluated", 0)) if checkpoint is not None else 0
    samples = max(saved, progress["samples_evaluated"] if progress else 0)
    if saved >= plan.samples:
        state = "done"
    elif runs.lock_holder(plan.root) is not None or (folder is not None and runs.lock_holder(folder) is not None):
        state = "running"
    elif (plan.root / FAILED).exists():
        state = "failed"
    elif progress and 0 < progress.get("max_steps", -1) <= progress.get("global_step", 0):
        state = "ended short"  # finished its own, smaller budget; the sweep continues it to this one
    elif folder is not None:
        state = "stopped"
    else:
        state = "not started"
    return Status(plan, state, samples, folder, progress)


def log_tail(plan: Plan, lines: int = 20) -> str:
    """The last ``lines`` lines of the run's ``train.log``."""
    try:
        text = (plan.root / LOG).read_text(errors="replace")
    except OSError:
        return "(no log)"
    # A progress bar writes carriage returns: keep what a terminal would show of each line.
    shown = [line.rpartition("\r")[2] for line in text.rstrip("\n").split("\n")]
    return "\n".join(shown[-lines:])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the run's process is killed when the sweep's process dies, however it dies (a
    ``SIGKILL`` included), so that no run trains on unwatched and holds its folder."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def claim(plan: Plan) -> IO[str] | None:
    """The run's own lock (``<root>/.lock``), held by the sweep process that trains it until it
    closes the handle, so that no other sweep starts it too; ``None`` if another process holds
    it (where locks are not available, the run is taken)."""
    try:
        return runs.take_lock(plan.root) or open(os.devnull)
    except BlockingIOError:
        return None
    except runs.LockUnavailableError as error:
        raise SystemExit(f"error: {error}") from None


def start(plan: Plan) -> subprocess.Popen:
    """Start the run's next attempt, its output appended to ``<root>/train.log``. The caller
    holds the run's :func:`claim`."""
    (plan.root / FAILED).unlink(missing_ok=True)
    command = plan.command()
    log = open(plan.root / LOG, "a")  # noqa: SIM115 - handed to the child, then closed here
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {plan.threads} thread(s): {' '.join(command)}\n")
    log.flush()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env=plan.environment(), preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    log.close()  # the child holds its own copy
    return process


def finish(plan: Plan, returncode: int) -> Status:
    """Record how an attempt ended (``failed.txt`` when it exited with an error) and return the
    run's status."""
    if returncode != 0:
        (plan.root / FAILED).write_text(f"exit status {returncode} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    return status(plan)


def run_local(plans: Sequence[Plan], workers: int, on_change: Callable[[], None] = lambda: None,
              poll_seconds: float = 1.0, report: IO[str] | None = None) -> tuple[list[Status], list[Plan]]:
    """Train every unfinished run of ``plans``, at most ``workers`` at a time, each in its own
    process, the longest (most steps) first so that the sweep does not end on one long run alone;
    a run that fails is reported with its log's tail and the others go on; a run that another
    process trains (its :func:`claim` is taken) is left to it. Calls ``on_change`` every
    ``poll_seconds`` (a progress display). Failures go to ``report`` (default: standard error).
    Returns the final statuses and the runs left to another process."""
    pending = sorted((plan for plan in plans if status(plan).state != "done"), key=lambda plan: -plan.spec.max_steps(plan.samples))
    running: dict[subprocess.Popen, tuple[Plan, IO[str]]] = {}
    left: list[Plan] = []
    try:
        while pending or running:
            while pending and len(running) < workers:
                plan = pending.pop(0)
                if (held := claim(plan)) is None:
                    left.append(plan)
                elif status(plan).state == "done":  # finished by another sweep since the list was made
                    held.close()
                else:
                    running[start(plan)] = plan, held
            time.sleep(poll_seconds)
            for process, (plan, held) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[process]
                held.close()
                ended = finish(plan, process.returncode)
                if ended.state != "done":
                    print(f"\n{plan.name}: the run ended {ended.state} (exit status {process.returncode}) at "
                          f"{ended.samples:,} of {plan.samples:,} samples; last lines of {plan.root / LOG}:\n"
                          f"{log_tail(plan)}\n", file=report or sys.stderr, flush=True)
            on_change()
    finally:  # stopped (Ctrl-C, an error here): stop the runs, which continue from their checkpoints next time
        for process in running:
            process.terminate()
        for process, (_, held) in running.items():
            process.wait()
            held.close()
    return [status(plan) for plan in plans], left


def train(plan: Plan) -> Status:
    """Train ``plan``'s run in a child process until it ends (what one SLURM job does); ``RuntimeError``
    with the log's tail if it did not finish, or saying so if another process trains it."""
    held = claim(plan)
    if held is None:
        raise RuntimeError(f"{plan.name} is being trained by another process (its lock {plan.root / runs.LOCK} is held)")
    try:
        process = start(plan)
        try:
            returncode = process.wait()
        finally:
            if process.poll() is None:  # this process is being stopped: stop the run with it
                process.terminate()
                process.wait()
    finally:
        held.close()
    ended = finish(plan, returncode)
    if ended.state != "done":
        raise RuntimeError(f"{plan.name} ended {ended.state} (exit status {returncode}) at {ended.samples:,} of "
                           f"{plan.samples:,} samples; last lines of {plan.root / LOG}:\n{log_tail(plan)}")
    return ended


def submit_slurm(plans: Sequence[Plan], folder: Path, partition: str | None, time_minutes: int, cpus: int,
                 cluster: str | None = None) -> list[Any]:
    """Submit every unfinished run of ``plans`` as one job of a SLURM array through submitit (job
    files and logs in ``folder``); returns the submitit jobs. A job pre-empted or timed out is
    resubmitted by submitit and continues from the run's checkpoint. ``cluster`` is submitit's
    (``"local"`` runs the same path as local processes, for tests)."""
    import submitit  # an optional dependency: pip install -e ".[slurm]"

    class Job(submitit.helpers.Checkpointable):
        """A run as a submitit job: on pre-emption or timeout, submitit requeues the same call,
        which continues from the checkpoint the run has by then."""

        def __call__(self, plan: Plan) -> str:
            return train(plan).state

    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(name="lit-vae", timeout_min=time_minutes, cpus_per_task=cpus, tasks_per_node=1,
                               slurm_array_parallelism=len(plans), **({"slurm_partition": partition} if partition else {}))
    todo = [plan for plan in plans if status(plan).state != "done"]
    return executor.map_array(Job(), todo) if todo else []
