"""Run folders, ``<save_dir>/<name>/version_<n>/``: how a run is named, which checkpoint
``--ckpt_path last`` means, when a fresh run may not use a folder, and where a resumed run's
event file starts (its purge mark). The CLI applies these rules; nothing here touches a trainer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

LAST = "last.ckpt"


def dataset_name(class_path: str) -> str:
    """The data set a data module class is for, from its name: ``"MNIST"`` for
    ``lit_vae.datamodules.MNISTDataModule``, ``"Frey Face"`` for ``...FreyFaceDataModule``."""
    name = class_path.rpartition(".")[2].removesuffix("DataModule")
    return re.sub(r"(?<!^)(?=[A-Z][a-z])", " ", name)


def run_name(data_class_path: str, model_class_path: str, latent_dim: int) -> str:
    """``<data>_nz<latent_dim>`` for AEVB, e.g. ``mnist_nz20``; a baseline's name follows, e.g.
    ``mnist_nz20_wake_sleep``."""
    name = dataset_name(data_class_path).lower().replace(" ", "_")
    method = model_class_path.rpartition(".")[2]
    suffix = "" if method == "VAE" else "_" + re.sub(r"(?<=[a-z])(?=[A-Z])", "_", method).lower()
    return f"{name}_nz{latent_dim}{suffix}"


def version_folder(save_dir: str | Path, name: str | None, version: int | str) -> Path:
    """The folder of one run: ``<save_dir>/<name>/version_<n>`` (or ``.../<version>`` for a string)."""
    return Path(save_dir) / (name or "") / (version if isinstance(version, str) else f"version_{version}")


def refuse_used_version(folder: Path) -> None:
    """``ValueError`` if ``folder`` already holds a run: a fresh fit logging there would mix its
    curves and checkpoints with that run's."""
    if folder.is_dir() and any(folder.iterdir()):
        raise ValueError(
            f"--trainer.logger.init_args.version: {folder} already holds a run. Continue it with "
            "--ckpt_path last, or leave out the version to start a new one in the next version folder."
        )


def newest_last_checkpoint(root: Path) -> Path:
    """``last.ckpt`` of the newest ``version_<n>`` under ``root`` that has one;
    ``FileNotFoundError`` with what to do instead when none has."""
    for candidate in sorted(root.glob(f"version_*/checkpoints/{LAST}"), key=_version_number, reverse=True):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"--ckpt_path last: no {LAST} in {root}/version_*/checkpoints. Nothing to resume: start a fresh run "
        "without --ckpt_path, or give a checkpoint file with --ckpt_path PATH."
    )


def run_of_checkpoint(path: str | Path) -> tuple[Path, str, int] | None:
    """``(save_dir, name, version)`` of the run folder that holds the checkpoint at ``path``
    (``<save_dir>/<name>/version_<n>/checkpoints/<file>``); ``None`` for a file elsewhere."""
    run = Path(path).resolve().parent.parent
    version = re.fullmatch(r"version_(\d+)", run.name)
    return (run.parent.parent, run.parent.name, int(version.group(1))) if version else None


def purge_step(checkpoint: dict[str, Any]) -> int:
    """The step at which a run resumed from ``checkpoint`` starts its new event file: TensorBoard
    then hides what the stopped run logged after the checkpoint, which the resume logs again."""
    return checkpoint.get("samples_evaluated", 0) + 1


def _version_number(path: Path) -> int:
    return int(path.parent.parent.name.removeprefix("version_"))
