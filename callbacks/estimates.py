"""An estimate of log p(x) over a set of points, kept only if it is possible: an impossible
number is never the headline.

An estimate fails, with its reason, when a point's value is not finite, when a point's value
exceeds what the decoder allows (log p(x) <= max_z log p(x|z): 0 under the Bernoulli decoder of
Eq. 11), or when its mean lies below the mean lower bound of the same points (Eq. 3: log p(x) >=
L(x)) by more than three standard errors of the per-point differences, its own Monte Carlo
error. Under DDP each rank holds its shard and torchmetrics reduces the sums over the ranks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchmetrics import SumMetric

#: Standard errors below the lower bound that still count as Monte Carlo noise.
TOLERANCE_SE = 3.0


class CheckedEstimate(nn.Module):
    """Per-point estimates accumulated chunk by chunk; :meth:`compute` gives the mean and
    :meth:`failure` why it cannot be reported (``None`` when it can).

    Args:
        maximum: the decoder's upper bound on log p(x) (the model's ``max_log_likelihood``).
    """

    count: SumMetric
    total: SumMetric
    total_squared: SumMetric
    not_finite: SumMetric
    above: SumMetric
    gap: SumMetric
    gap_squared: SumMetric
    compared: SumMetric

    def __init__(self, maximum: float) -> None:
        super().__init__()
        self.maximum = maximum
        for name in ("count", "total", "total_squared", "not_finite", "above", "gap", "gap_squared", "compared"):
            setattr(self, name, SumMetric(nan_strategy="disable"))

    def update(self, estimate: Tensor, lower_bound: Tensor | None = None) -> None:
        """Add the estimates of a chunk of points (``[B]``), with their lower bounds if known."""
        finite = torch.isfinite(estimate)
        self.count.update(torch.tensor(float(estimate.numel()), dtype=torch.float64))
        self.not_finite.update((~finite).sum().double())
        self.total.update(estimate[finite].double().sum())
        self.total_squared.update(estimate[finite].double().square().sum())
        self.above.update((estimate[finite] > self.maximum).sum().double())
        if lower_bound is not None:
            gap = (estimate - lower_bound)[finite & torch.isfinite(lower_bound)].double()
            self.gap.update(gap.sum())
            self.gap_squared.update(gap.square().sum())
            self.compared.update(torch.tensor(float(gap.numel()), dtype=torch.float64))

    def compute(self) -> float:
        """The mean over the finite points."""
        return (self.total.compute() / (self.count.compute() - self.not_finite.compute())).item()

    def standard_error(self) -> float:
        """The standard error of :meth:`compute`: the sample standard deviation of the finite
        points' estimates over the square root of their number (``nan`` for fewer than two)."""
        n = (self.count.compute() - self.not_finite.compute()).item()
        if n < 2:
            return math.nan
        mean = self.total.compute().item() / n
        variance = max(self.total_squared.compute().item() / n - mean**2, 0.0) * n / (n - 1)
        return math.sqrt(variance / n)

    def failure(self) -> str | None:
        """Why the estimate is impossible, or ``None``."""
        count, not_finite, above = (int(metric.compute().item()) for metric in (self.count, self.not_finite, self.above))
        if not_finite:
            return f"not finite at {not_finite:,} of {count:,} points"
        if above:
            return (f"above {self.maximum:g}, the most the decoder allows (log p(x) <= max log p(x|z)), "
                    f"at {above:,} of {count:,} points")
        compared = self.compared.compute().item()
        if compared >= 2:
            mean = self.gap.compute().item() / compared
            variance = max(self.gap_squared.compute().item() / compared - mean**2, 0.0) * compared / (compared - 1)
            error = TOLERANCE_SE * math.sqrt(variance / compared)
            if mean < -error:
                return (f"{-mean:.2f} nats below the lower bound of the same points, more than its Monte Carlo "
                        f"error ({TOLERANCE_SE:g} standard errors: {error:.2f})")
        return None
