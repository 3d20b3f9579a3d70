"""Reading logged scalars back from a run's TensorBoard event files."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator, ScalarEvent

from lit_vae.run_folder import RunFolder


def read_events(run_dir: str | Path) -> dict[str, list[ScalarEvent]]:
    """All scalar events under ``run_dir`` as ``{tag: [ScalarEvent(wall_time, step, value), ...]}``,
    in step order, as TensorBoard shows them.

    A resumed run writes a new event file into its folder, starting with a purge mark at the
    checkpoint's step: TensorBoard then hides what the stopped run logged after its checkpoint,
    which the resumed run logs again. Each folder is read as TensorBoard reads a run (its files
    in order, purges applied); folders are merged. The sub-folders where ``test``, ``validate``
    and ``predict`` of a run's checkpoints log (``version_<n>/test``, ...) are left out, unless
    ``run_dir`` is one: their points repeat, or come between, the training curves' ones.
    """
    folders = event_folders(run_dir)
    if not folders:
        raise FileNotFoundError(f"no TensorBoard event files under {run_dir}")
    events: dict[str, list[ScalarEvent]] = defaultdict(list)
    # A resume's purge mark makes TensorBoard warn of "out of order" steps: here it is by design.
    logging.getLogger("tensorboard").setLevel(logging.ERROR)
    for folder in folders:
        accumulator = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
        accumulator.Reload()
        for tag in accumulator.Tags()[SCALARS]:
            events[tag] += accumulator.Scalars(tag)
    return {tag: sorted(points, key=lambda e: (e.step, e.wall_time)) for tag, points in events.items()}


def event_folders(root: str | Path) -> list[Path]:
    """The folders under ``root`` that directly hold event files of a run's training, in sorted
    order: where ``test``, ``validate`` and ``predict`` of its checkpoints log
    (:meth:`RunFolder.is_evaluation`) is left out, unless ``root`` is such a folder itself."""
    root = Path(root)
    return sorted({file.parent for file in root.rglob("events.out.tfevents.*")
                   if file.parent == root or not RunFolder.is_evaluation(file.parent)})


def read_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """All scalars under ``run_dir`` as ``{tag: [(step, value), ...]}`` in step order."""
    return {tag: [(e.step, e.value) for e in points] for tag, points in read_events(run_dir).items()}
