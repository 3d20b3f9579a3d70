"""Checkpoints written so that a run killed while saving keeps its previous checkpoint whole."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside its destination, flushes it to the disk,
    then renames it over the destination (``os.replace``: atomic on POSIX and Windows).

    Lightning's own writer moves a file from the system's temporary folder, which is a copy,
    not a rename, whenever that folder is on another file system: a kill during the copy leaves
    a truncated ``last.ckpt``. Here the destination always holds either the previous checkpoint
    or the new one, complete. Remote paths (``s3://`` and the like) go to Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
