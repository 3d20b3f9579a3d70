"""Frey Face: does one rescaling of the x axis map our curve onto the paper's?

    python benchmarks/frey_face_axis.py docs/reproduction/curves/figure2_frey_face_nz10.csv \\
        --out docs/reproduction/frey_face_axis.png
    python benchmarks/frey_face_axis.py docs/reproduction/speed/*.csv    # the speed study's table

Our Frey Face bound rises faster than the paper's from the first 10^5 samples. For each of the
paper's readings of the panel (``paper_values.csv``: train and test at 10^6 and 10^7) this finds
the sample count s' at which our curve first reaches the paper's value (log-linear between
logged points); s / s' is how many times faster our run got there. One factor for both readings
would fit a run that differs from the paper's only in how samples are counted, or in a constant
scale of the step size early on; factors that differ rule that out. The figure draws our curves
with the x axis divided by the geometric mean of the factors, beside the paper's readings. With
several CSVs (one per setting of the speed study), a Markdown table of the test factors closes
the output: a setting that explains the gap has factors near 1.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lit_vae.figures import paper_rows  # noqa: E402
from lit_vae.report import read_curves  # noqa: E402


def first_reach(points: list[tuple[int, float]], value: float) -> float | None:
    """The first sample count at which the curve reaches ``value``, interpolated linearly in
    log(samples) between logged points; ``None`` if it never does."""
    for (s0, v0), (s1, v1) in itertools.pairwise(points):
        if v0 < value <= v1:
            t = (value - v0) / (v1 - v0)
            return 10 ** (math.log10(s0) + t * (math.log10(s1) - math.log10(s0)))
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("curves", type=Path, nargs="+", help="Frey Face runs' curves CSVs (lit-vae reproduce --report)")
    parser.add_argument("--out", type=Path, help="draw the first run's rescaled curves into this image file")
    args = parser.parse_args()
    rows = ["| run | samples | test at 10^6: factor | test at 10^7: factor |", "| --- | ---: | ---: | ---: |"]
    for path in args.curves:
        run, meta, factors = stretch(path)
        rows.append(f"| {meta['run']} | {int(meta.get('samples_evaluated') or 0):,} | "
                    + " | ".join(f"{factors[key]:.2f}" if key in factors else "not reached"
                                 for key in (("test", 10**6), ("test", 10**7))) + " |")
        if args.out is not None and path == args.curves[0]:
            draw(run, factors, args.out)
    if len(args.curves) > 1:
        print("\n".join(rows))


def stretch(path: Path) -> tuple[Any, dict[str, str], dict[tuple[str, int], float]]:
    """A run's curves, metadata, and for each of the paper's readings of its panel that the run
    reaches, the factor (paper's samples) / (samples at which our curve first reaches it); printed."""
    run, meta = read_curves(path)
    paper = paper_readings(run)
    factors = {}
    print(f"{meta['run']}: where our curve reaches the paper's readings")
    for (split, samples), value in sorted(paper.items()):
        reached = first_reach(run.scalars[f"lower_bound/{split}"], value)
        if reached is None:
            print(f"  {split:5} paper {value:7.1f} at {samples:.0e}: never reached")
            continue
        factors[split, samples] = samples / reached
        print(f"  {split:5} paper {value:7.1f} at {samples:.0e}: ours at {reached:11,.0f} samples, factor {samples / reached:.2f}")
    if factors:
        print(f"  geometric mean of the factors: {math.exp(sum(map(math.log, factors.values())) / len(factors)):.2f}")
    return run, meta, factors


def draw(run: Any, factors: dict[tuple[str, int], float], out: Path) -> None:
    """Our curves as logged and shifted right by the geometric mean of ``factors``, beside the
    paper's readings, into the image file ``out``."""
    paper = paper_readings(run)
    scale = math.exp(sum(map(math.log, factors.values())) / len(factors))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for split, style in (("train", "-"), ("test", "--")):
        steps, values = zip(*run.scalars[f"lower_bound/{split}"])
        ax.plot(steps, values, style, color="tab:red", alpha=0.35, label=f"ours ({split})")
        ax.plot([s * scale for s in steps], values, style, color="tab:red", label=f"ours ({split}), x {scale:.2f}")
        readings = sorted((s, v) for (sp, s), v in paper.items() if sp == split)
        ax.plot(*zip(*readings), "o" if split == "train" else "s", color="black", label=f"paper ({split})")
    ax.set_xscale("log")
    ax.set_xlim(10**5, 2 * 10**7)
    ax.set_ylim(400, None)
    ax.set_xlabel("training samples evaluated")
    ax.set_ylabel("lower bound per datapoint (nats)")
    ax.set_title(f"Frey Face, $N_z$ = {run.latent_dim}: our curves, and shifted right by x {scale:.2f}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def paper_readings(run: Any) -> dict[tuple[str, int], float]:
    """The paper's readings of the run's panel and method: ``{(split, samples): value}``."""
    return {(row["split"], int(row["samples"])): float(row["value"]) for row in paper_rows()
            if row["figure"] == "2" and row["dataset"] == run.dataset and int(row["latent_dim"]) == run.latent_dim
            and row["method"] == run.method}


if __name__ == "__main__":
    main()
