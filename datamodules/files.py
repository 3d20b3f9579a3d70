"""Finding, downloading and verifying data files, with one clear error when that fails.

A download goes to a temporary folder and each file is verified before it is moved into place,
so a failed or interrupted download leaves nothing behind in the data folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import IO

from lit_vae.atomic import atomic_write

#: Environment variable that sets the default data folder.
DATA_DIR_ENV = "LIT_VAE_DATA_DIR"
#: Seconds a download waits on a silent server before it gives up (urllib waits forever).
DOWNLOAD_TIMEOUT = 60.0


class DataNotFoundError(FileNotFoundError):
    """Data files are missing and could not be downloaded."""


class CorruptDataError(ValueError):
    """A data file exists but does not hold the expected contents."""


def default_data_dir(data_dir: str | None) -> Path:
    """``data_dir`` if given, else ``$LIT_VAE_DATA_DIR``, else ``data/``."""
    return Path(data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV, "data")).expanduser()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str, hint: str) -> None:
    """Raise :class:`CorruptDataError` unless the file's SHA-256 is ``expected``."""
    actual = sha256(path)
    if actual != expected:
        raise CorruptDataError(
            f"{path} is corrupted or not the expected file: SHA-256 {actual}, expected {expected}. "
            f"Nothing was loaded. Delete it so that it can be downloaded again, or replace it. {hint}"
        )


def missing_files_error(dataset: str, folder: Path, names: list[str], reason: str, hint: str) -> DataNotFoundError:
    return DataNotFoundError(
        f"{dataset} data not found: {folder.resolve()} should hold {', '.join(names)}, "
        f"and they could not be downloaded ({reason}). {hint} Either put the files there, or point "
        f"--data.data_dir (or the environment variable {DATA_DIR_ENV}) at a folder that holds them."
    )


def download_verified(folder: Path, fetch: Callable[[Path], object], names: list[str], verify: Callable[[Path], object]) -> None:
    """Run ``fetch(tmp)`` to create ``names`` in a temporary folder, ``verify`` each one, then move
    them into ``folder``. On any failure nothing is written to ``folder``; a server that stops
    answering for :data:`DOWNLOAD_TIMEOUT` seconds is a failure (``TimeoutError``)."""
    with tempfile.TemporaryDirectory(prefix="lit-vae-download-") as tmp, socket_timeout(DOWNLOAD_TIMEOUT):
        fetch(Path(tmp))
        for name in names:
            verify(Path(tmp) / name)
        for name in names:
            atomic_write(folder / name, partial(_copy, Path(tmp) / name))


def _copy(source: Path, file: IO[bytes]) -> None:
    with open(source, "rb") as read:
        shutil.copyfileobj(read, file)


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """Sockets opened in the block (urllib's, which take no timeout from torchvision) give up
    after ``seconds`` of silence."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
