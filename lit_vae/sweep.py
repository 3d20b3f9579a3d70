"""The paper's experiments as a sweep of ordinary ``fit`` runs: the manifest that lists them
(``paper_runs.yaml``), the command each run is, and where each stands. :mod:`lit_vae.launch`
runs them (a local pool of worker processes, or a SLURM array); :mod:`lit_vae.reproduce` is the
command line around both.

Each run is ``python -m lit_vae fit --config <config> ...`` logging to
``<out>/<name>/version_<n>/`` with its output in ``<out>/<name>/train.log``; a run that has a
checkpoint is continued with ``--ckpt_path last`` (the CLI's rule picks its newest state), so a
sweep stopped in any way continues where each run stopped, and a finished run is skipped.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lit_vae.callbacks.checkpoint import EVERY_N_TRAIN_STEPS
from lit_vae.configs import config_file, config_names
from lit_vae.folder_lock import lock_holder
from lit_vae.run_folder import RunFolder, RunVersions, stored_value

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

    @property
    def versions(self) -> RunVersions:
        return RunVersions(self.root)

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
        if self.versions.checkpoint() is not None:
            command.append("--ckpt_path=last")
        return command

    def environment(self) -> dict[str, str]:
        """The environment of the run's process: ``threads`` torch (OpenMP/MKL) threads, and no
        ``SLURM_*`` variables: under a SLURM job the sweep's process (submitit) alone requeues,
        and Lightning in the run must not take the job for its own (its SLURM environment would
        requeue it too and write ``hpc_ckpt_<n>.ckpt`` outside the run folder)."""
        inherited = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
        return {**inherited, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}


@dataclass(frozen=True)
class Status:
    """Where a run stands: ``state`` is one of ``done``, ``running`` (its fit, or a sweep that
    trains it, holds its lock), ``stopped`` (it continues from its checkpoint), ``ended short``
    (it finished a smaller budget than this one, and continues to it), ``failed`` (its last
    attempt exited with an error), ``not started``."""

    plan: Plan
    state: str
    samples: int  # samples evaluated by the newest process (live), else by the newest checkpoint
    folder: RunFolder | None  # the run's newest version folder
    progress: dict[str, Any] | None


def status(plan: Plan) -> Status:
    """Where ``plan``'s run stands, read from its folder (nothing is written)."""
    fit = plan.versions.newest_fit()
    progress = fit.progress() if fit is not None else None
    checkpoint = plan.versions.checkpoint()
    saved = int(stored_value(checkpoint, "samples_evaluated", 0)) if checkpoint is not None else 0
    samples = max(saved, progress["samples_evaluated"] if progress else 0)
    if saved >= plan.samples:
        state = "done"
    elif lock_holder(plan.root) is not None or (fit is not None and lock_holder(fit.path) is not None):
        state = "running"
    elif (plan.root / FAILED).exists():
        state = "failed"
    elif progress and 0 < progress.get("max_steps", -1) <= progress.get("global_step", 0):
        state = "ended short"  # finished its own, smaller budget; the sweep continues it to this one
    elif fit is not None:
        state = "stopped"
    else:
        state = "not started"
    return Status(plan, state, samples, fit, progress)
