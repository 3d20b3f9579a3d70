"""An estimate of log p(x) is reported only if it is possible (callbacks/estimates.py)."""

import math

import numpy as np
import pytest
import torch

from lit_vae.callbacks.estimates import CheckedEstimate


def checked(estimate, lower_bound=None, maximum=0.0, chunks=3):
    result = CheckedEstimate(maximum)
    for i, part in enumerate(estimate.chunk(chunks)):
        result.update(part, None if lower_bound is None else lower_bound.chunk(chunks)[i])
    return result


class TestCheckedEstimate:
    def test_a_possible_estimate_is_its_mean(self):
        estimate = torch.tensor([-100.0, -102.0, -98.0, -101.0, -99.0, -100.0])
        result = checked(estimate, estimate - 1.0)
        assert result.failure() is None and result.compute() == pytest.approx(-100.0)

    def test_standard_error_over_chunks_is_the_sample_one(self):
        values = torch.randn(1000, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 4 - 90
        estimate = CheckedEstimate(0.0)
        for chunk in values.split(300):
            estimate.update(chunk)
        expected = float(np.std(values.numpy(), ddof=1) / np.sqrt(len(values)))
        assert estimate.standard_error() == pytest.approx(expected, rel=1e-4)  # from sums of squares, in float64

    def test_not_finite(self):
        result = checked(torch.tensor([-100.0, math.nan, -90.0, math.inf, -80.0, -70.0]))
        assert result.failure() == "not finite at 2 of 6 points"

    def test_above_what_the_decoder_allows(self):
        result = checked(torch.tensor([-100.0, 0.5, -90.0, -80.0, 39_252.0, -70.0]))
        assert result.failure().startswith("above 0, the most the decoder allows") and result.failure().endswith("at 2 of 6 points")
        assert checked(torch.tensor([5.0, 10.0, 20.0]), maximum=27.76).failure() is None

    def test_below_the_lower_bound_by_more_than_its_monte_carlo_error(self):
        """Gaps -1.1, -0.9, -1.0, -1.2, -0.8, -1.0: mean -1.0, sample sd sqrt(0.1 / 5) = 0.1414,
        3 standard errors 3 x 0.1414 / sqrt(6) = 0.173 (by hand): 1.00 nats below is a failure."""
        bound = torch.full((6,), -100.0)
        result = checked(bound + torch.tensor([-1.1, -0.9, -1.0, -1.2, -0.8, -1.0]), bound)
        assert result.failure() == ("1.00 nats below the lower bound of the same points, more than its Monte Carlo "
                                    "error (3 standard errors: 0.17)")

    def test_below_the_lower_bound_within_its_error_is_noise(self):
        """Gaps -3, +2, -2, +1, -1, +1: mean -0.33, sd 1.97, 3 standard errors 2.41."""
        bound = torch.full((6,), -100.0)
        assert checked(bound + torch.tensor([-3.0, 2.0, -2.0, 1.0, -1.0, 1.0]), bound).failure() is None
