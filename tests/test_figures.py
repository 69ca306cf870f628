"""The frontier the report draws: non-dominated fixed-radius runs, interpolated."""

import pytest

from iaat_jax import figures


def test_frontier_gap_interpolates_the_fixed_radius_runs():
    points = [(0.2, 0.9), (0.6, 0.5)]
    assert figures.frontier_gap(points, 0.4, 0.8) == pytest.approx(0.1)  # above the line
    assert figures.frontier_gap(points, 0.4, 0.6) == pytest.approx(-0.1)
    assert figures.frontier_gap(points, 0.7, 0.55) == pytest.approx(0.05)  # beyond the robust end
    # a collapsed run (dominated on both axes) does not pull the frontier down
    assert figures.frontier_gap(points + [(0.3, 0.2)], 0.4, 0.8) == pytest.approx(0.1)
    assert figures.pareto_front(points + [(0.3, 0.2)]) == points
