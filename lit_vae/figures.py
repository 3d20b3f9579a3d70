"""The paper's Figure 2 and Figure 3 drawn from the TensorBoard event files of finished runs.

    python -m lit_vae.figures runs/mnist_nz20 runs/frey_face_nz10 --out figure2.png --paper
    python -m lit_vae.figures runs/figure3_n1000 --figure 3 --out figure3.png

Every folder under the given paths that holds event files is one run (a resumed run's files in
the same folder are merged). Figure 2 has one panel per data set and latent size, with
``lower_bound/train`` solid and ``lower_bound/test`` dashed; Figure 3 has one panel per training
set size, with ``marginal_likelihood/train`` and ``/test``. The x axis is training samples
evaluated, log scale, from 10^5 as in the paper; a run that ends before 10^5 is drawn from its
first point, and a panel that ends before the paper's first readings (10^6) says so in its
title. One colour per method (AEVB, wake-sleep, MCEM). ``--paper`` adds the
paper's values from ``paper_values.csv`` (shipped with the package) as markers joined by thin
lines. Needs matplotlib: ``pip install -e ".[figures]"``.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lit_vae.datamodules.base import dataset_name
from lit_vae.events import event_folders, read_scalars

PAPER_VALUES = Path(__file__).with_name("paper_values.csv")

#: figure -> (tag prefix, y axis label)
FIGURES = {2: ("lower_bound", "lower bound per datapoint (nats)"),
           3: ("marginal_likelihood", "marginal log-likelihood per datapoint (nats)")}
METHODS = {"VAE": "AEVB", "WakeSleep": "wake-sleep", "MCEM": "MCEM"}
COLOURS = {"AEVB": "tab:red", "wake-sleep": "tab:blue", "MCEM": "tab:green"}
LINESTYLES = {"train": "-", "test": "--"}
_DATASETS_BY_SIZE = {784: "MNIST", 560: "Frey Face"}
#: Where the paper's plots begin, and its first readings (paper_values.csv).
PAPER_START, PAPER_FIRST_READING = 100_000, 1_000_000


@dataclass(frozen=True)
class Run:
    """One run folder: what it trained, and its scalars as ``{tag: [(step, value), ...]}``."""

    path: Path
    dataset: str
    method: str
    latent_dim: int
    train_size: int
    scalars: dict[str, list[tuple[int, float]]]


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """The folders under ``paths`` that directly hold a run's TensorBoard event files, in sorted
    order; where ``test``, ``validate`` and ``predict`` of a run's checkpoints logged is not a run
    of its own (unless named itself)."""
    folders: set[Path] = set()
    for path in map(Path, paths):
        found = set(event_folders(path)) if path.is_dir() else set()
        if not found:
            raise FileNotFoundError(
                f"no TensorBoard event files under {path}: pass run folders written by "
                "`python train.py fit`, such as runs/mnist_nz20 or runs/mnist_nz20/version_0"
            )
        folders |= found
    return sorted(folders)


def load_run(folder: Path) -> Run:
    """Read a run's scalars and, from its ``config.yaml`` (or ``hparams.yaml``), what it trained;
    ``ValueError`` in one line for a file that cannot be read so. The class paths in those files
    are read as names, never imported."""
    config_file = folder / "config.yaml"
    try:
        if config_file.is_file():
            config = yaml.safe_load(config_file.read_text())
            model, data = config["model"], config["data"]
            dataset = dataset_name(str(data["class_path"]))
            method_class = str(model["class_path"]).rpartition(".")[2]
            latent_dim, train_size = int(model["init_args"]["latent_dim"]), int(data["init_args"]["train_size"])
        else:  # a run made from Python without the CLI: the model's saved hyperparameters
            config_file = folder / "hparams.yaml"
            hparams = yaml.safe_load(config_file.read_text())
            dataset = _DATASETS_BY_SIZE.get(hparams["input_dim"], f"D = {hparams['input_dim']}")
            method_class, latent_dim, train_size = "VAE", int(hparams["latent_dim"]), int(hparams["train_size"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{config_file} does not say what the run trained ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else error!r}); the run is left out") from None
    return Run(folder, dataset, METHODS.get(method_class, method_class), latent_dim, train_size, read_scalars(folder))


def panel_of(figure: int, dataset: str, latent_dim: int, train_size: int) -> tuple[str, str]:
    """(row, title) of the panel a curve belongs to: Figure 2 by latent size, Figure 3 by N_train."""
    if figure == 2:
        return dataset, f"{dataset}, $N_z$ = {latent_dim}"
    return dataset, f"{dataset}, $N_z$ = {latent_dim}, $N_{{train}}$ = {train_size:,}"


def paper_curves(figure: int) -> dict[tuple[tuple[str, str], str, str], list[tuple[int, float]]]:
    """The paper's values for ``figure``: ``{(panel, method, split): [(samples, value), ...]}``."""
    curves: dict[tuple[tuple[str, str], str, str], list[tuple[int, float]]] = defaultdict(list)
    for row in paper_rows():
        if int(row["figure"]) == figure:
            train_size = int(row["train_size"]) if row["train_size"] else 0
            panel = panel_of(figure, row["dataset"], int(row["latent_dim"]), train_size)
            curves[panel, row["method"], row["split"]].append((int(row["samples"]), float(row["value"])))
    return {key: sorted(points) for key, points in curves.items()}


def paper_rows() -> list[dict[str, str]]:
    """The rows of ``paper_values.csv``: figure, dataset, latent_dim, train_size (empty: the full
    training set), method, split, samples, value."""
    with PAPER_VALUES.open() as file:
        return list(csv.DictReader(line for line in file if not line.startswith("#")))


def panel_title(title: str, last_sample: int) -> str:
    """``title``, with a note when the panel's curves end before the paper's first readings."""
    if last_sample >= PAPER_FIRST_READING:
        return title
    return f"{title}\n(ends at {last_sample:,} samples; the paper's readings begin at $10^6$)"


def draw(runs: Sequence[Run], figure: int, out: Path, paper: bool = False, start: int = PAPER_START) -> Path:
    """Draw ``figure`` (2 or 3) from ``runs`` into the image file ``out``, from ``start`` training
    samples on (the paper's plots begin at 10^5); a curve with no point from ``start`` on is
    drawn from its first point. Returns ``out``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit('the figure tool needs matplotlib: pip install -e ".[figures]"') from None
    prefix, ylabel = FIGURES[figure]
    curves: dict[tuple[tuple[str, str], str, str], list[list[tuple[int, float]]]] = defaultdict(list)
    for run in runs:
        panel = panel_of(figure, run.dataset, run.latent_dim, run.train_size)
        for split in LINESTYLES:
            logged = run.scalars.get(f"{prefix}/{split}", [])
            if points := [(step, value) for step, value in logged if step >= start] or logged:
                curves[panel, run.method, split].append(points)
    if not curves:
        raise SystemExit(f"none of the runs logged {prefix}/train or {prefix}/test, which Figure {figure} plots: "
                         + ", ".join(str(run.path) for run in runs))
    # One row of panels per data set, as in the paper's Figure 2.
    rows: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for panel in sorted({key[0] for key in curves}, key=_panel_order):
        rows[panel[0]].append(panel)
    columns = max(map(len, rows.values()))
    fig, axes = plt.subplots(len(rows), columns, figsize=(max(3.6 * columns, 7.2), 3.0 * len(rows) + 0.6), squeeze=False)
    where = {}
    for r, in_row in enumerate(rows.values()):
        for c in range(columns):
            if c < len(in_row):
                where[in_row[c]] = axes[r][c]
            else:
                axes[r][c].set_visible(False)
    for (panel, method, split), seeds in sorted(curves.items(), key=lambda item: _curve_order(*item[0][1:3])):
        steps, mean, low, high = band(seeds)
        where[panel].plot(steps, mean, LINESTYLES[split], color=COLOURS.get(method), label=f"{method} ({split})")
        if len(seeds) > 1:
            where[panel].fill_between(steps, low, high, color=COLOURS.get(method), alpha=0.2, linewidth=0,
                                      label=f"{method}, range of {len(seeds)} seeds")
    if paper:
        for (panel, method, split), points in sorted(paper_curves(figure).items(), key=lambda item: _curve_order(*item[0][1:])):
            if panel in where:
                paper_steps, paper_values = zip(*points)
                where[panel].plot(paper_steps, paper_values, LINESTYLES[split], color=COLOURS.get(method),
                                  marker="o" if split == "train" else "s", markersize=4, linewidth=0.8, alpha=0.5,
                                  label=f"paper {method} ({split})")
    legend: dict[str, Any] = {}  # one entry per label: several runs and panels share them
    last: defaultdict[Any, int] = defaultdict(int)
    for (panel, *_), seeds in curves.items():
        last[panel] = max(last[panel], *(points[-1][0] for points in seeds))
    for panel, ax in where.items():
        ax.set_xscale("log")
        ax.set_title(panel_title(panel[1], last[panel]), fontsize=10)
        ax.set_xlabel("training samples evaluated")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(True, which="major", alpha=0.3)
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend.keys()), loc="lower center", ncol=min(4, len(legend)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04 + 0.05 * -(-len(legend) // 4) / len(rows), 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")  # the legend may be wider than the panels
    plt.close(fig)
    return out


def band(seeds: Sequence[Sequence[tuple[int, float]]]) -> tuple[np.ndarray, ...]:
    """The seeds' curves of one method and split on the union of their steps: (steps, mean, min,
    max), each curve interpolated (log x) only inside its own range, so where one seed's run
    is shorter the others alone make the line and its band."""
    steps = np.array(sorted({step for points in seeds for step, _ in points}), dtype=np.float64)
    stacked = np.full((len(seeds), len(steps)), np.nan)
    for row, points in zip(stacked, seeds):
        x, y = np.array(points, dtype=np.float64).T
        inside = (steps >= x[0]) & (steps <= x[-1])
        row[inside] = np.interp(np.log10(np.maximum(steps[inside], 1)), np.log10(np.maximum(x, 1)), y)
    return steps, np.nanmean(stacked, 0), np.nanmin(stacked, 0), np.nanmax(stacked, 0)


def _panel_order(panel: tuple[str, str]) -> tuple[int, str, list[int]]:
    """MNIST's row first (as in the paper), then panels by their numbers (Nz = 3, 5, 10, 20, 200)."""
    return panel[0] != "MNIST", panel[0], [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", panel[1])]


def _curve_order(method: str, split: str) -> tuple[int, str, bool]:
    """AEVB first, then the baselines; train before test."""
    return method != "AEVB", method, split != "train"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lit_vae.figures", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders (or folders holding them)")
    parser.add_argument("--figure", type=int, choices=sorted(FIGURES), default=2)
    parser.add_argument("--out", type=Path, help="image file to write (default: figure<N>.png)")
    parser.add_argument("--paper", action="store_true", help="overlay the paper's values")
    parser.add_argument("--start", type=int, default=PAPER_START, help="first training-sample count to plot (default: 10^5, as the paper; "
                        "a run that ends before it is drawn from its first point)")
    args = parser.parse_args(argv)
    try:
        folders = find_runs(args.runs)
    except FileNotFoundError as error:
        parser.error(str(error))
    try:
        loaded = [load_run(folder) for folder in folders]
    except ValueError as error:
        parser.error(str(error))
    out = draw(loaded, args.figure, args.out or Path(f"figure{args.figure}.png"), args.paper, args.start)
    print(f"wrote {out} from {len(folders)} run(s)")


if __name__ == "__main__":
    main()
