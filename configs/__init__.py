"""The paper's experiment configs, shipped with the package: ``lit-vae fit --config mnist`` runs
``mnist.yaml`` from here when no file of that name is in the working directory."""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importlib.resources.abc is Python 3.11+; annotations only
    from importlib.resources.abc import Traversable


def config_file(name: str) -> Traversable:
    """The shipped config ``name`` (``mnist`` or ``mnist.yaml``), whether or not it exists."""
    return files(__name__) / (name if name.endswith(".yaml") else f"{name}.yaml")


def config_names() -> list[str]:
    """The names of the shipped configs (``mnist``, ``frey_face``, ...), sorted."""
    return sorted(entry.name.removesuffix(".yaml") for entry in files(__name__).iterdir() if entry.name.endswith(".yaml"))
