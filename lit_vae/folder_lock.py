"""Folder locks: one process writes a run (or trains a sweep's run) at a time. A folder's
``.lock`` file records the PID of the process that holds an exclusive ``fcntl`` lock on it; a
second process is refused, naming the holder. Where locks are not available (Windows, some
cluster file systems with ``$LIT_VAE_NO_LOCKS`` set) the file only marks the folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows: no advisory locks of this kind; runs are not locked there
    fcntl = None  # type: ignore[assignment]

LOCK = ".lock"
#: Set to run without folder locks, on file systems that have none.
NO_LOCKS = "LIT_VAE_NO_LOCKS"

_held: list[IO[str]] = []  # the locks this process holds until release_held


def hold(folder: Path) -> None:
    """Take ``folder``'s lock (:func:`take_lock`) and hold it until :func:`release_held` or the
    end of the process."""
    handle = take_lock(folder)
    if handle is not None:
        _held.append(handle)


def take_lock(folder: Path) -> IO[str] | None:
    """The open ``folder/.lock``, exclusively locked and holding this process's PID, for the
    caller to close when done (``None`` where locks are not available: the file then only marks
    the folder); ``BlockingIOError`` naming the holder if another process (or another handle of
    this one) has it; :class:`LockUnavailableError` where the file system refuses locks."""
    folder.mkdir(parents=True, exist_ok=True)
    if not locking():
        (folder / LOCK).write_text(str(os.getpid()))
        return None
    handle = open(folder / LOCK, "a+")  # noqa: SIM115 - held open on purpose: the lock lives as long as it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise BlockingIOError(f"{folder} is in use by another run (PID {holder}): wait for it to end, or stop it, "
                              "before resuming this run again") from None
    except OSError as error:  # no locks on this file system (some cluster mounts)
        handle.close()
        raise LockUnavailableError(f"cannot lock {folder / LOCK}: {error.strerror} (a file system without locks?). "
                                   f"If no other process trains this run, set {NO_LOCKS}=1 to run without locks") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def lock_holder(folder: Path) -> str | None:
    """The PID (as recorded) of the process that holds ``folder``'s lock; ``None`` if no process
    holds it (or locks are not available here)."""
    if not locking() or not (folder / LOCK).exists():
        return None
    with open(folder / LOCK) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "unknown"
        except OSError:  # no locks here: nobody can be known to hold it
            return None
    return None


class LockUnavailableError(OSError):
    """The file system refuses locks for a reason other than another holder."""


def locking() -> bool:
    """Whether run folders are locked: where ``fcntl`` exists, unless ``$LIT_VAE_NO_LOCKS`` is set."""
    return fcntl is not None and not os.environ.get(NO_LOCKS)


def release_held() -> None:
    """Release the locks this process took with :func:`hold`."""
    while _held:
        _held.pop().close()
