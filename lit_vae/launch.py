"""Running a sweep's runs (:mod:`lit_vae.sweep`), each an ordinary ``fit`` in a child process
with its output appended to ``<out>/<name>/train.log``: on a local pool of worker processes with
a fixed torch thread count each (:func:`run_local`), or as a SLURM array through submitit
(:func:`submit_slurm`). A sweep process claims a run's lock before it starts the run, so that two
sweeps over one folder never train the same run; a run that fails leaves ``failed.txt``."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from lit_vae.folder_lock import LOCK, LockUnavailableError, take_lock
from lit_vae.sweep import FAILED, LOG, Plan, Status, status


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
        return take_lock(plan.root) or open(os.devnull)
    except BlockingIOError:
        return None
    except LockUnavailableError as error:
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
        raise RuntimeError(f"{plan.name} is being trained by another process (its lock {plan.root / LOCK} is held)")
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
