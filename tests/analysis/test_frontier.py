"""The fixed-radius frontier and the verdicts on adaptive settings: non-dominated PGD-AT
points, interpolated, compared with each IAAT setting's mean over its seeds."""

import pytest

from iaat_jax.analysis import frontier


def test_frontier_gap_interpolates_the_fixed_radius_runs():
    points = [(0.2, 0.9), (0.6, 0.5)]
    assert frontier.frontier_gap(points, 0.4, 0.8) == pytest.approx(0.1)  # above the line
    assert frontier.frontier_gap(points, 0.4, 0.6) == pytest.approx(-0.1)
    assert frontier.frontier_gap(points, 0.7, 0.55) == pytest.approx(0.05)  # beyond the end
    # a collapsed run (dominated on both axes) does not pull the frontier down
    assert frontier.frontier_gap(points + [(0.3, 0.2)], 0.4, 0.8) == pytest.approx(0.1)
    assert frontier.pareto_front(points + [(0.3, 0.2)]) == points


def test_the_frontier_uses_the_declared_suite_and_names_runs_without_it():
    from test_runs import run_of

    pgd = run_of("p0", 0, 0.3, 0.96, 0.80)
    iaat = run_of("i0", 0, 0.3, 0.97, 0.75)
    iaat.config["method"] = "iaat"
    iaat.sweep["autoattack"] = [{"suite": "autoattack", "epsilon": 0.3, "robust_accuracy": 0.64}]
    result = frontier.frontier([pgd, iaat], 0.3, "autoattack")
    assert any("p0 lack autoattack" in w for w in result.warnings)  # named, not filled in
    assert result.verdicts == [] and result.front == []  # no fixed-radius run with that suite
    assert "no evaluated PGD-AT run" in result.warnings[-1]
    result = frontier.frontier([pgd, iaat], 0.3)
    assert "robust 0.750" in result.verdicts[0]  # the default: eval.json's worst case
    assert result.front == [(0.80, 0.96)] and not result.warnings


def test_a_frontier_gap_smaller_than_the_seeds_spread_is_called_so():
    from test_runs import run_of

    def iaat(name, seed, clean, robust):
        run = run_of(name, seed, 0.3, clean, robust)
        run.config["method"] = "iaat"
        return run

    pgd = [run_of(f"p{s}", s, 0.3, c, 0.80) for s, c in enumerate((0.960, 0.966, 0.963))]
    close = [iaat(f"i{s}", s, c, 0.80) for s, c in enumerate((0.964, 0.966, 0.965))]
    far = [iaat(f"j{s}", s, c, 0.81) for s, c in enumerate((0.990, 0.991, 0.992))]
    for runs, expected in ((close, "within the seeds' spread"), (far, "clean accuracy)")):
        verdicts = frontier.frontier(pgd + runs, 0.3).verdicts
        assert len(verdicts) == 1 and "-> beyond" in verdicts[0] and expected in verdicts[0]
