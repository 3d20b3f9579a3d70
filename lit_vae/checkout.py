"""The checkout's top-level ``callbacks/`` and ``datamodules/`` folders as one package each.

The project's brief keeps ``callbacks/`` and ``datamodules/`` at the top of the repository, and
``lit_vae.callbacks`` and ``lit_vae.datamodules`` link to them. From the checkout's root (which
Python puts first on ``sys.path``), ``import callbacks`` would otherwise load the same files a
second time as other module objects, across which ``isinstance`` fails. Each folder's
``__init__`` calls :func:`one_package` first, so that under its folder name it is the
``lit_vae`` package itself, submodules included (``tests/test_packaging.py``).
"""

import importlib
import pkgutil
import sys


def one_package(name: str, package: str) -> None:
    """Make the module being imported as ``name`` (a top-level folder's name) the package
    ``package``, with every submodule ``name.<sub>`` the same object as ``package.<sub>``.
    Nothing happens when ``name`` is ``package``, the normal import."""
    if name == package:
        return
    target = importlib.import_module(package)
    for info in pkgutil.iter_modules(target.__path__):
        sys.modules[f"{name}.{info.name}"] = importlib.import_module(f"{package}.{info.name}")
    sys.modules[name] = target  # what the import statement hands back, once this file has run
