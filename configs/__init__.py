"""The paper's experiment configs, shipped with the package: ``lit-vae fit --config mnist`` runs
``mnist.yaml`` from here when no file of that name is in the working directory."""

from __future__ import annotations

import difflib
from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importlib.resources.abc is Python 3.11+; annotations only
    from importlib.resources.abc import Traversable


def config_file(name: str) -> Traversable:
    """The shipped config ``name`` (``mnist`` or ``mnist.yaml``); ``ValueError`` for a name that
    is not one of :func:`config_names` (never a path joined onto the package's folder)."""
    stem = name.removesuffix(".yaml")
    if stem not in config_names():
        close = difflib.get_close_matches(stem, config_names(), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"no file {name}, and no shipped config of that name ({hint}shipped: {', '.join(config_names())})")
    return files(__name__) / f"{stem}.yaml"


def config_names() -> list[str]:
    """The names of the shipped configs (``mnist``, ``frey_face``, ...), sorted."""
    return sorted(entry.name.removesuffix(".yaml") for entry in files(__name__).iterdir() if entry.name.endswith(".yaml"))
