"""What a person watching a sweep sees: one progress display for all its runs
(:class:`SweepDisplay`) and the table of ``lit-vae reproduce --status``."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lit_vae import sweep
from lit_vae.events import read_scalars
from lit_vae.figures import FIGURES


class SweepDisplay:
    """One progress display for the sweep: runs done, samples done of planned, time left. A bar on
    a terminal; otherwise a plain line a minute."""

    def __init__(self, plans: Sequence[sweep.Plan], every_seconds: float = 60.0) -> None:
        self.plans = plans
        self.planned = sum(plan.samples for plan in plans)
        self.samples = {plan.name: min(plan.samples, sweep.status(plan).samples) for plan in plans}
        self.start_samples, self.started = self.done_samples, time.monotonic()
        self.every_seconds, self.printed = every_seconds, self.started
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            tqdm.monitor_interval = 0  # no monitor thread: the sweep forks its runs
            self.bar = tqdm(total=self.planned, initial=self.done_samples, unit="sample", unit_scale=True, dynamic_ncols=True)
            self.bar.set_description(self.runs_text())

    @property
    def done_samples(self) -> int:
        return sum(self.samples.values())

    def runs_text(self) -> str:
        done = sum(self.samples[plan.name] >= plan.samples for plan in self.plans)
        return f"{done}/{len(self.plans)} runs"

    def update(self) -> None:
        before = self.done_samples
        for plan in self.plans:
            if self.samples[plan.name] >= plan.samples:  # finished: nothing more to read
                continue
            fit = plan.versions.newest_fit()
            progress = fit.progress() if fit is not None else None
            if progress is not None:
                self.samples[plan.name] = min(plan.samples, max(self.samples[plan.name], progress["samples_evaluated"]))
        if self.bar is not None:
            self.bar.set_description(self.runs_text(), refresh=False)
            self.bar.update(self.done_samples - before)
        elif time.monotonic() - self.printed >= self.every_seconds:
            self.printed = time.monotonic()
            print(self.line(), file=sys.stderr, flush=True)

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = (self.done_samples - self.start_samples) / elapsed if elapsed > 0 else 0.0
        left = duration((self.planned - self.done_samples) / rate) if rate > 0 else "unknown"
        return (f"sweep: {self.runs_text()} done, {self.done_samples:,} of {self.planned:,} samples "
                f"({100 * self.done_samples / max(1, self.planned):.1f}%), {rate:,.0f} samples/s, time left about {left}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def status_table(plans: Sequence[sweep.Plan]) -> str:
    """The table ``--status`` prints: run, state, samples done and planned, last test value, samples/s."""
    rows = [("run", "state", "samples done", "planned", "last test", "samples/s")]
    for plan in plans:
        s = sweep.status(plan)
        last = _last_test(s.folder.path if s.folder else None, plan.spec.figure)
        rows.append((plan.name, s.state, f"{s.samples:,}", f"{plan.samples:,}", "" if last is None else f"{last:.2f}",
                     f"{s.progress['samples_per_second']:,.0f}" if s.progress else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                     for row in rows)


def _last_test(folder: Path | None, figure: int) -> float | None:
    """The last ``lower_bound/test`` (Figure 2) or ``marginal_likelihood/test`` (Figure 3) a run logged."""
    try:
        points = read_scalars(folder).get(f"{FIGURES[figure][0]}/test") if folder else None
    except FileNotFoundError:
        return None
    return points[-1][1] if points else None


def duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
