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
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

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


#: The spacing of the paper's Figure 2 train points, in training samples, per data set and method:
#: its code records a train point on a wall-clock timer as the mean of every minibatch bound since
#: the previous point (``anglepy``'s ``wzoptim.loop_va``), so each reading is a trailing mean over
#: this many samples. Measured from the markers of the paper's vector figure.
TRAILING_WINDOW = {("MNIST", "AEVB"): 230_000, ("MNIST", "wake-sleep"): 230_000,
                   ("Frey Face", "AEVB"): 460_000, ("Frey Face", "wake-sleep"): 275_000}


def trailing_mean(points: Sequence[tuple[int, float]], end: int, window: int, epoch: int) -> float | None:
    """The mean of a per-epoch train curve over the samples (``end`` - ``window``, ``end``], the
    statistic of the paper's train points: each epoch's mean (logged at the epoch's last sample)
    stands for its epoch's centre, the curve is linear between them (so a thinned curve is
    read as well) and continues the line of its last two points to ``end``, and the integral over
    the window is divided by its width. ``None`` unless
    the curve covers the window (within 2% of ``end``, as :func:`value_at`)."""
    if not points or points[0][0] - epoch / 2 > end - window or points[-1][0] < end * 0.98:
        return None
    steps, values = np.array(points, dtype=np.float64).T
    centres = steps - epoch / 2
    if len(centres) > 1 and centres[-1] < end:
        slope = (values[-1] - values[-2]) / (centres[-1] - centres[-2])
        centres, values = np.append(centres, end), np.append(values, values[-1] + slope * (end - centres[-1]))
    start = end - window
    grid = np.concatenate(([start], centres[(centres > start) & (centres < end)], [end]))
    curve = np.interp(grid, centres, values)
    return float(((curve[1:] + curve[:-1]) / 2 * np.diff(grid)).sum() / window)


#: How precisely the paper's values are read from its vector figures (``paper_values.csv``:
#: about +-1 nat on MNIST, more where a Frey Face curve is steep).
READING_ERROR = 1.0


def verdict(ours: Sequence[float], paper: float | None) -> str:
    """The judgement of a paper reading against our seeds' values: inside their range, or outside
    it by how much, in nats and in multiples of the range's width (our spread), noting a miss
    smaller than the reading's own error (:data:`READING_ERROR`)."""
    if paper is None or not ours:
        return ""
    low, high = min(ours), max(ours)
    if len(ours) < 2:
        return f"one seed, no spread: {min(ours) - paper:+.1f} nats"
    if low <= paper <= high:
        return "within the spread of our seeds"
    beyond = paper - high if paper > high else paper - low
    spread = high - low
    times = f"{_one_figure(abs(beyond) / spread)}x our spread" if spread > 0 else "our seeds agree exactly"
    within = f", within the +-{READING_ERROR:g} nat of reading the figure" if abs(beyond) <= READING_ERROR else ""
    return f"outside: paper {'above' if beyond > 0 else 'below'} our range by {_one_figure(abs(beyond))} nats ({times}){within}"


def _one_figure(value: float) -> str:
    """One decimal, two below 0.1, "<0.01" below that: a miss never reads "0.0"."""
    return f"{value:.1f}" if value >= 0.095 else f"{value:.2f}" if value >= 0.005 else "<0.01"


def table(runs: Sequence[tuple[Run, dict[str, Any]]]) -> str:
    """A Markdown table per figure, panel, method and run (its seeds, ``<run>_seed<n>``, together), split and
    sample count of :data:`TABLE_SAMPLES` (and the runs' planned budgets) that a seed reached or
    the paper reports: our mean and
    range over the seeds, for Figure 2's train curve also the trailing mean over the paper's
    point spacing (:data:`TRAILING_WINDOW`, like for like with the paper's train points), the
    paper's reading and the :func:`verdict` (on the trailing mean for train, else the value)."""
    paper = {(int(r["figure"]), r["dataset"], int(r["latent_dim"]), int(r["train_size"] or 0), r["method"], r["split"],
              int(r["samples"])): float(r["value"]) for r in paper_rows()}
    groups: dict[tuple[int, str, str, str], list[Run]] = {}
    budgets: dict[tuple[int, str, str, str], set[int]] = {}
    for run, meta in runs:
        key = (int(meta["figure"]), meta["panel"], run.method, re.sub(r"_seed\d+$", "", str(meta.get("run", ""))))
        groups.setdefault(key, []).append(run)
        budgets.setdefault(key, set()).update([int(meta["planned"])] if meta.get("planned") else [])
    lines = ["| figure | panel | method | run | split | samples | seeds | ours: mean [range] | ours, trailing mean [range] | paper "
             "| verdict |", "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for (figure, panel, method, name), seeds in groups.items():
        first = seeds[0]
        train_size = first.train_size if figure == 3 else 0
        window = TRAILING_WINDOW.get((first.dataset, method)) if figure == 2 else None
        for split in ("train", "test"):
            for samples in sorted(set(TABLE_SAMPLES) | budgets[figure, panel, method, name]):
                tag = f"{FIGURES[figure][0]}/{split}"
                values = [v for run in seeds if (v := value_at(run.scalars.get(tag, []), samples)) is not None]
                trailing = [v for run in seeds if split == "train" and window is not None
                            and (v := trailing_mean(run.scalars.get(tag, []), samples, window, run.train_size)) is not None]
                expected = paper.get((figure, first.dataset, first.latent_dim, train_size, method, split, samples))
                if not values and expected is None:
                    continue
                judged = trailing if split == "train" and window is not None else values
                lines.append(f"| {figure} | {panel} | {method} | {name} | {split} | {samples:.0e} | {len(values)} | {_band(values)} | "
                             f"{_band(trailing)} | {_number(expected)} | {verdict(judged, expected)} |")
    return "\n".join(lines) + "\n"


def _band(values: Sequence[float]) -> str:
    """``mean [min, max]`` of several values, the value alone for one, empty for none."""
    if len(values) < 2:
        return _number(values[0] if values else None)
    return f"{sum(values) / len(values):.1f} [{min(values):.1f}, {max(values):.1f}]"


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

