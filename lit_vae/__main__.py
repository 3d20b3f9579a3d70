"""The entry point of ``train.py``, ``python -m lit_vae`` and the ``lit-vae`` console script:
``lit-vae reproduce ...`` goes to :mod:`lit_vae.reproduce`, everything else to the Lightning
command line (:mod:`lit_vae.cli`); a stop that is explained in one line ends without a
traceback, and a fit stopped by a signal exits with the shell's status for it."""

from __future__ import annotations

import errno
import sys

from lit_vae import reproduce
from lit_vae.callbacks.checkpoint_files import CheckpointWriteError
from lit_vae.cli import cli
from lit_vae.console import shipped_configs
from lit_vae.interfaces import NonFiniteError


def main() -> None:
    """Run the command line of ``sys.argv``."""
    if sys.argv[1:2] == ["reproduce"]:
        reproduce.main(sys.argv[2:])
        return
    sys.argv[1:] = shipped_configs(sys.argv[1:])
    try:
        ran = cli()
    except (NonFiniteError, CheckpointWriteError) as error:  # explained in one line: no traceback
        raise SystemExit(f"error: {error}") from None
    except OSError as error:
        if error.errno not in (errno.EFBIG, errno.ENOSPC, errno.EDQUOT):
            raise
        raise SystemExit(f"error: could not write {error.filename or 'a file of the run'} ({error.strerror}); the last "
                         "checkpoint is whole. Free space (or raise the limit), then continue with --ckpt_path last") from None
    stopped_by = getattr(ran.trainer.checkpoint_callback, "stopped_by", None)
    if stopped_by is not None:  # stopped by a signal, with a checkpoint: the shell's status for that signal
        raise SystemExit(128 + stopped_by)


if __name__ == "__main__":
    main()
