"""The reproduction's report: each run's curves as a small CSV, Figures 2 and 3 redrawn with the
paper's values (``lit_vae.figures``), and a Markdown table of measured against paper values.

A curves CSV (``<name>.csv``) starts with ``#`` lines that say what the run trained and how fast
(``# dataset: MNIST``, ``# method: AEVB``, ``# latent_dim: 3``, ``# train_size: 50000``,
``# planned: ...``, ``# samples_evaluated: ...``, ``# seconds: ...``, ``# samples_per_second: ...``),
then the rows
``tag,samples,value``. It is thinned to one point per 1/:data:`POINTS_PER_DECADE` of a decade of
samples, plus every point at ``m x 10^k`` samples (the table's columns) and the last;
``pandas.read_csv(path, comment="#")`` or :func:`read_curves` reads it back.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lit_vae.figures import FIGURES, Run, paper_rows

POINTS_PER_DECADE = 40
#: The metadata lines of a curves CSV, in order.
META = ("run", "seed", "figure", "panel", "dataset", "method", "latent_dim", "train_size", "planned", "samples_evaluated", "seconds",
        "samples_per_second")
#: The sample counts of the table: the paper's readings and the decades.
TABLE_SAMPLES = (10**6, 10**7, 2 * 10**7, 10**8)


def thin(points: Sequence[tuple[int, float]], per_decade: int = POINTS_PER_DECADE) -> list[tuple[int, float]]:
    """At most ``per_decade`` points per decade of ``points`` (sorted by step): the first in each
    bin of 1/``per_decade`` decade, every point at ``m x 10^k`` (m = 1..9) and the last point."""
    kept, bins = [], set()
    for i, (step, value) in enumerate(points):
        bin_ = math.floor(math.log10(step) * per_decade) if step > 0 else -1
        if bin_ not in bins or _round(step) or i == len(points) - 1:
            kept.append((step, value))
            bins.add(bin_)
    return kept


def _round(step: int) -> bool:
    """Whether ``step`` is ``m x 10^k`` with an integer ``m`` in 1..9."""
    return step > 0 and step == round(step / 10 ** int(math.log10(step))) * 10 ** int(math.log10(step))


def export_curves(run: Run, meta: dict[str, Any], out: Path) -> Path:
    """Write ``run``'s curves of the figure's tags, thinned, with ``meta`` as ``#`` lines, to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"dataset": run.dataset, "method": run.method, "latent_dim": run.latent_dim, "train_size": run.train_size, **meta}
    with out.open("w", newline="") as file:
        for key in META:
            if meta.get(key) is not None:
                file.write(f"# {key}: {meta[key]}\n")
        writer = csv.writer(file)
        writer.writerow(["tag", "samples", "value"])
        for tag in sorted(run.scalars):
            if tag.partition("/")[0] in {prefix for prefix, _ in FIGURES.values()}:
                writer.writerows((tag, step, f"{value:.6g}") for step, value in thin(run.scalars[tag]))
    return out


def read_curves(path: Path) -> tuple[Run, dict[str, str]]:
    """A curves CSV as a :class:`lit_vae.figures.Run` and its metadata."""
    meta, rows = {}, []
    with path.open() as file:
        for line in file:
            if line.startswith("#"):
                key, _, value = line[1:].partition(":")
                meta[key.strip()] = value.strip()
            else:
                rows.append(line)
    scalars: dict[str, list[tuple[int, float]]] = {}
    for row in csv.DictReader(rows):
        scalars.setdefault(row["tag"], []).append((int(row["samples"]), float(row["value"])))
    run = Run(path, meta["dataset"], meta["method"], int(meta["latent_dim"]), int(meta["train_size"]), scalars)
    return run, meta


def value_at(points: Sequence[tuple[int, float]], samples: int, tolerance: float = 0.02) -> float | None:
    """The curve's value at ``samples`` (the point nearest to it within ``tolerance``, relative)."""
    near = [(abs(step - samples), value) for step, value in points if abs(step - samples) <= tolerance * samples]
    return min(near)[1] if near else None


def table(runs: Sequence[tuple[Run, dict[str, Any]]]) -> str:
    """A Markdown table, per run (manifest order), split and sample count of :data:`TABLE_SAMPLES`
    that the run reached or the paper reports: measured, paper, measured - paper."""
    paper = {(int(r["figure"]), r["dataset"], int(r["latent_dim"]), int(r["train_size"] or 0), r["method"], r["split"],
              int(r["samples"])): float(r["value"]) for r in paper_rows()}
    lines = ["| figure | panel | method | split | samples | measured | paper | difference |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for run, meta in runs:
        figure = int(meta["figure"])
        train_size = run.train_size if figure == 3 else 0
        for split in ("train", "test"):
            points = run.scalars.get(f"{FIGURES[figure][0]}/{split}", [])
            for samples in TABLE_SAMPLES:
                measured = value_at(points, samples)
                expected = paper.get((figure, run.dataset, run.latent_dim, train_size, run.method, split, samples))
                if measured is None and expected is None:
                    continue
                difference = f"{measured - expected:+.1f}" if measured is not None and expected is not None else ""
                lines.append(f"| {figure} | {meta['panel']} | {run.method} | {split} | {samples:.0e} | {_number(measured)} | "
                             f"{_number(expected)} | {difference} |")
    return "\n".join(lines) + "\n"


def speed_table(runs: Sequence[tuple[Run, dict[str, Any]]]) -> str:
    """A Markdown table of each run's samples evaluated (of those planned), training wall-clock
    time and samples/s."""
    lines = ["| run | samples | of planned | hours | samples/s |", "| --- | ---: | ---: | ---: | ---: |"]
    for _, meta in runs:
        seconds = float(meta.get("seconds") or "nan")
        lines.append(f"| {meta['run']} | {int(meta.get('samples_evaluated') or 0):,} | {int(meta.get('planned') or 0):,} | "
                     f"{seconds / 3600:.2f} | {float(meta.get('samples_per_second') or 'nan'):,.0f} |")
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"

