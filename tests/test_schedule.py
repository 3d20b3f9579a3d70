"""The log-spaced evaluation schedule, against points written out by hand."""

import pytest

from lit_vae.callbacks.schedule import LogSpacedSchedule


class TestLogSpacedSchedule:
    def test_points_of_the_default_mantissas(self):
        schedule, points, n = LogSpacedSchedule(), [], 0
        while (n := schedule.next_after(n)) <= 10_000_000:
            points.append(n)
        assert points == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000,
                          100_000, 200_000, 500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000]

    def test_other_mantissas(self):
        schedule = LogSpacedSchedule([1, 3])
        assert [schedule.next_after(n) for n in (0, 1, 2, 3, 9, 10, 29, 30, 299)] == [1, 3, 3, 10, 10, 30, 30, 100, 300]

    @pytest.mark.parametrize(("before", "after", "due"), [
        (0, 100, True),          # 1 .. 50 and 100 lie in the first step
        (100, 199, False),       # nothing between 100 and 200
        (199, 200, True),        # the interval is (before, after]: 200 counts
        (200, 201, False),       # ... and is not counted twice
        (900, 1_000, True),      # the end of a decade
        (1_000, 1_999, False),
        (4_900, 5_000, True),
        (5_000, 9_999, False),
        (9_900, 10_100, True),   # across a decade
        (10_000, 10_100, False),
    ])
    def test_due_fires_once_per_point_passed(self, before, after, due):
        assert LogSpacedSchedule().due(before, after) is due

    def test_due_along_a_run_of_steps(self):
        """Called every step of 100 samples, as the callbacks do: fires exactly at the points."""
        schedule = LogSpacedSchedule()
        fired = [n for n in range(100, 30_001, 100) if schedule.due(n - 100, n)]
        assert fired == [100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000]

    @pytest.mark.parametrize("mantissas", [[], [0.5], [10]])
    def test_mantissas_outside_one_to_ten_are_refused(self, mantissas):
        with pytest.raises(ValueError, match="mantissas"):
            LogSpacedSchedule(mantissas)
