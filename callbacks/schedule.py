"""Log-spaced evaluation points, matching the log x axis of Figures 2 and 3."""

from __future__ import annotations

import math
from collections.abc import Sequence

#: The schedule of every callback by default: 1, 2, 5, 10, 20, 50, ... samples.
DEFAULT_MANTISSAS: tuple[float, ...] = (1, 2, 5)


class LogSpacedSchedule:
    """The points m x 10^k for each mantissa m (default :data:`DEFAULT_MANTISSAS`) and every k >= 0.

    ``due(before, after)`` says whether a point lies in (before, after]: with ``before`` and
    ``after`` the samples evaluated around a training step, it fires once per point passed.
    """

    def __init__(self, mantissas: Sequence[float] = DEFAULT_MANTISSAS) -> None:
        if not mantissas or any(not 1 <= m < 10 for m in mantissas):
            raise ValueError(f"mantissas must be non-empty and in [1, 10), got {list(mantissas)}")
        self.mantissas = sorted(mantissas)
        self._start, self._point = 0, 0

    def next_after(self, n: int) -> int:
        """The smallest point greater than ``n``."""
        k = max(0, int(math.log10(n)) if n > 0 else 0)
        while True:
            for m in self.mantissas:
                point = round(m * 10**k)
                if point > n:
                    return point
            k += 1

    def due(self, before: int, after: int) -> bool:
        """Whether a point lies in (``before``, ``after``]."""
        # Called every training step: remember the interval [start, point) on which
        # next_after(n) == point, and search again only when ``before`` leaves it.
        if not self._start <= before < self._point:
            self._start, self._point = before, self.next_after(before)
        return self._point <= after
