"""``lit-vae reproduce`` (``python -m lit_vae reproduce``): the paper's Figures 2 and 3 in one command.

    lit-vae reproduce                                  # every run of the manifest, on this machine
    lit-vae reproduce --figure 2 --samples 20000       # Figure 2, 2 x 10^4 samples per run
    lit-vae reproduce --status                         # where each run stands
    lit-vae reproduce --report                         # figures and tables from what exists
    lit-vae reproduce --launcher slurm --partition gpu --time 240

Each run is an ordinary ``fit`` run (``lit_vae.sweep``) in ``<out>/<name>/``: TensorBoard,
``--ckpt_path last`` and ``test`` work on it as on any other. The same command again continues
unfinished runs from their checkpoints and skips finished ones. When the runs are done the report
is written: ``figure2.png``, ``figure3.png``, ``report.md`` (measured against the paper at 10^6,
10^7, 2 x 10^7 and 10^8 samples, and each run's samples/s) and ``curves/<name>.csv``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from lit_vae import launch, sweep
from lit_vae.figures import FIGURES, draw, load_run
from lit_vae.report import export_curves, read_curves, speed_table, table
from lit_vae.sweep_display import SweepDisplay, duration, status_table

SITTINGS = "sittings.log"


def cores() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lit-vae reproduce", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_argument_group("what to run")
    what.add_argument("--figure", type=int, nargs="+", default=[], metavar="N", help="figures to run (default: all; 2, 3)")
    what.add_argument("--panel", nargs="+", default=[], metavar="PANEL",
                      help="panels to run, e.g. mnist_nz20 frey_face_nz2 n50000 (default: all of the figures)")
    what.add_argument("--run", nargs="+", default=[], metavar="NAME", help="runs by name, e.g. figure3_n50000_mcem (default: all)")
    what.add_argument("--samples", type=count, metavar="N",
                      help="training samples per run (default: the manifest's, 10^7 for Figure 2 and 2 x 10^7 for Figure 3; "
                           "the paper goes to 10^8)")
    what.add_argument("--seed", type=int, default=sweep.DEFAULT_SEED,
                      help=f"seed of every run, the first of --seeds (default: {sweep.DEFAULT_SEED}, as the shipped configs)")
    what.add_argument("--seeds", type=count, default=1, metavar="K",
                      help="run each selected run with K seeds, --seed to --seed + K - 1, each its own run "
                           "<name>_seed<n> (the default seed keeps <name>); the report gives their mean, range and verdict")
    what.add_argument("--out", type=Path, default=Path("runs/paper"), help="the sweep's folder (default: runs/paper)")
    what.add_argument("--manifest", type=Path, default=sweep.MANIFEST, help="the runs (default: the paper's, shipped)")
    how = p.add_argument_group("how")
    how.add_argument("--workers", type=count, default=cores(), help=f"runs at a time on this machine (default: its cores, {cores()})")
    how.add_argument("--threads", type=count, help="torch threads per run (default: cores / workers, at least 1)")
    how.add_argument("--launcher", choices=("local", "slurm"), default="local", help="local worker processes, or a SLURM array")
    how.add_argument("--partition", help="SLURM partition (--launcher slurm)")
    how.add_argument("--time", type=count, default=24 * 60, metavar="MINUTES",
                     help="SLURM time limit per job; a job timed out is requeued and continues (default: 1440)")
    how.add_argument("--cpus-per-job", type=count, default=2, help="SLURM CPUs per job, and its torch threads (default: 2)")
    do = p.add_argument_group("instead of running")
    do.add_argument("--status", action="store_true", help="print where each run stands and exit")
    do.add_argument("--report", action="store_true", help="write the report from what exists and exit")
    do.add_argument("--curves", type=Path, nargs="+", default=[], metavar="DIR",
                    help="folders of curves CSVs (such as docs/reproduction/curves) for runs not in --out, for --report")
    do.add_argument("--report-to", type=Path, metavar="DIR", help="where the report goes (default: --out)")
    return p


def reads_as_itself(value: str) -> bool:
    """Whether a command-line value reads back as the same string (LightningCLI parses values as YAML)."""
    try:
        return yaml.safe_load(value) == value
    except yaml.YAMLError:
        return False


def count(text: str) -> int:
    value = int(float(text))  # 1e7 is welcome
    if value < 1 or value != float(text):
        raise argparse.ArgumentTypeError(f"a positive whole number, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> None:
    p = parser()
    args = p.parse_args(argv)
    try:
        specs = sweep.select(sweep.load_manifest(args.manifest), args.figure, args.panel, args.run)
    except (OSError, ValueError) as error:
        p.error(str(error))
    out = args.out.resolve()
    if not reads_as_itself(str(out)):
        p.error(f"--out {out}: each run's command line would read this path as YAML, not as a folder name; "
                "choose one without ': ' or ' #'")
    threads = args.cpus_per_job if args.launcher == "slurm" else args.threads or max(1, cores() // args.workers)
    seeds = range(args.seed, args.seed + args.seeds)
    plans = [sweep.Plan(spec, args.samples or spec.samples, out, seed, threads) for spec in specs for seed in seeds]
    if not args.status and importlib.util.find_spec("matplotlib") is None:  # before any run: the report draws figures
        p.error('the report draws Figures 2 and 3 with matplotlib, which is not installed: pip install "lit-vae[figures]"')
    if args.status:
        print(status_table(plans))
    elif args.report:
        write_report(plans, args.curves, args.report_to or out)
    elif args.launcher == "slurm":
        try:
            jobs = launch.submit_slurm(plans, out / "slurm", args.partition, args.time, args.cpus_per_job)
        except ImportError:
            p.error('--launcher slurm needs submitit: pip install "lit-vae[slurm]"')
        print(f"submitted {len(jobs)} run(s) as SLURM jobs {', '.join(job.job_id for job in jobs) or '(none: all done)'}; "
              f"follow them with: lit-vae reproduce --status --out {args.out}, then --report")
    else:
        raise SystemExit(run(plans, args.workers))


def run(plans: Sequence[sweep.Plan], workers: int) -> int:
    """Run the sweep here, then write the report; the exit status (1 if a run failed). Each
    sitting (this call) adds a line to ``<out>/sittings.log``: when, how long, what it did."""
    if not plans:
        return 0
    started, wall = time.monotonic(), time.strftime("%Y-%m-%d %H:%M:%S")
    display = SweepDisplay(plans)
    print(f"sweep: {len(plans)} run(s) in {plans[0].out}, {workers} at a time, {plans[0].threads} torch thread(s) each",
          file=sys.stderr, flush=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM stops the runs as Ctrl-C does
    statuses: list[sweep.Status] = []
    left: list[sweep.Plan] = []
    try:
        statuses, left = launch.run_local(plans, workers, on_change=display.update)
    except KeyboardInterrupt:
        print("\nsweep stopped; the same command continues every run from its checkpoint", file=sys.stderr)
        return 130
    finally:
        display.close()
        signal.signal(signal.SIGTERM, previous)
        done = sum(s.state == "done" for s in statuses or map(sweep.status, plans))
        with (plans[0].out / SITTINGS).open("a") as log:
            log.write(f"{wall} to {time.strftime('%H:%M:%S')} ({duration(time.monotonic() - started)}): {len(plans)} run(s), "
                      f"{done} done, {workers} worker(s) x {plans[0].threads} thread(s)\n")
    others = {plan.name for plan in left}
    failed = [s.plan.name for s in statuses if s.state != "done" and s.plan.name not in others]
    print(f"sweep: {sum(s.state == 'done' for s in statuses)} of {len(statuses)} run(s) done in {duration(time.monotonic() - started)}"
          + (f"; not done: {', '.join(failed)} (see above; the same command retries them)" if failed else ""), file=sys.stderr)
    if others:  # the other process writes the report when its runs end
        print(f"sweep: left to another process that trains them: {', '.join(sorted(others))}; no report written "
              "(the same command, once they are done, writes it)", file=sys.stderr)
        return 1 if failed else 0
    write_report(plans, [], plans[0].out)
    return 1 if failed else 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def write_report(plans: Sequence[sweep.Plan], curves: Sequence[Path], to: Path) -> None:
    """Export the curves of every run that has logged something, read the others from ``curves``
    folders, and write ``figure2.png``, ``figure3.png`` and ``report.md`` into ``to``, and there
    also ``sittings.log``: the sittings of the sweep's output folder merged into its own."""
    collected: list[tuple[Any, dict[str, Any]]] = []
    missing = []
    for plan in plans:
        fit = plan.versions.newest_fit()
        csv_name = f"{plan.name}.csv"
        if fit is not None and any(fit.path.glob("events.out.tfevents.*")):
            progress = fit.progress() or {}
            meta = {"run": plan.name, "seed": plan.seed, "figure": plan.spec.figure, "panel": plan.spec.panel, "planned": plan.samples,
                    **{key: progress.get(key) for key in ("samples_evaluated", "seconds", "samples_per_second")}}
            try:
                run = load_run(fit.path)
            except ValueError as error:
                print(f"report: {error}", file=sys.stderr)
                missing.append(plan.name)
                continue
            path = export_curves(run, meta, to / "curves" / csv_name)
            collected.append(read_curves(path))
        elif found := [folder / csv_name for folder in curves if (folder / csv_name).is_file()]:
            collected.append(read_curves(found[0]))
        else:
            missing.append(plan.name)
    lines = ["# The paper reproduced: measured against the paper's readings", ""]
    for figure in sorted({plan.spec.figure for plan in plans}):
        runs = [run for run, meta in collected
                if int(meta["figure"]) == figure and any(tag.startswith(FIGURES[figure][0] + "/") for tag in run.scalars)]
        if runs:
            image = draw(runs, figure, to / f"figure{figure}.png", paper=True)
            lines += [f"![Figure {figure}]({image.name})", ""]
    lines += ["## Measured and paper values (nats per datapoint)", "",
              "Per reading of the paper: our mean and [range] over the seeds of each run; for Figure 2's train curve "
              "also the trailing mean, the paper's own train statistic (the mean of our per-epoch train bounds over "
              "the paper's point spacing before the reading); and the verdict, on the trailing mean for train points, "
              "on the value otherwise. The paper's values are read from its vector figures to about +-1 nat.", "",
              table(collected),
              "## Training time per run", "", speed_table(collected)]
    # The report's folder keeps every sitting it has seen (it is what gets committed), in order of
    # time: a line starts with its start time, so sorting the text sorts the sittings.
    logs = dict.fromkeys([plans[0].out / SITTINGS, to / SITTINGS]) if plans else {}
    sittings = sorted({line for path in logs if path.is_file() for line in path.read_text().splitlines() if line.strip()})
    if sittings:
        (to / SITTINGS).write_text("\n".join(sittings) + "\n")
        lines += ["## Sittings of the sweep (wall-clock)", "", "```", *sittings, "```", ""]
    if missing:
        lines += [f"Not run yet: {', '.join(missing)}.", ""]
    (to / "report.md").write_text("\n".join(lines))
    print(f"report: {to / 'report.md'} ({len(collected)} of {len(plans)} runs)", file=sys.stderr)
