"""Every file this project writes (checkpoints, ``progress.json``, downloaded data) is written
whole or not at all: into a temporary file beside its destination, flushed to the disk, then
renamed over it (``os.replace``, atomic on POSIX and Windows). A kill or a full disk midway leaves
the previous file as it was, and at worst a temporary file that :func:`remove_leftovers` clears."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

#: Suffix of the temporary files, ``.<name>.<random>.tmp``: what a write killed midway leaves.
TEMPORARY = ".tmp"


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> None:
    """Create or replace the file at ``path`` with what ``write(file)`` writes into an open binary
    file; the destination holds either its previous content or the new one, complete. Whatever
    ``write`` raises is raised, after the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def remove_leftovers(folder: Path, pattern: str = "*") -> list[Path]:
    """Delete the temporary files that writes of files matching ``pattern`` in ``folder`` left
    when killed midway; returns them. Only for a folder no other process writes to."""
    leftovers = sorted(folder.glob(f".{pattern}.*{TEMPORARY}"))
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers
