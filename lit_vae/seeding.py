"""Seeds derived from integer keys: the one place where a position (seed, epoch, batch, ...)
becomes a random stream, for the data order, the training and evaluation noise and the
estimators' noise alike. It imports nothing of ours: the layer under everything."""

from __future__ import annotations

import numpy as np
import torch


def derive_seed(*key: int) -> int:
    """A 64-bit seed that is a well-mixed function of the non-negative integers in ``key``
    (NumPy's ``SeedSequence``): neighbouring keys give unrelated streams."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0])


def seeded_generator(*key: int, generator: torch.Generator | None = None) -> torch.Generator:
    """``generator`` (default: a new CPU generator) seeded with :func:`derive_seed` of ``key``."""
    return (torch.Generator() if generator is None else generator).manual_seed(derive_seed(*key))
