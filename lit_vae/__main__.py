"""``python -m lit_vae``: the same command line as ``train.py`` and ``lit-vae``."""

from lit_vae.cli import main

main()
