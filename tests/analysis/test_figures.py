"""The report's figures: one name and one colour per setting in every figure, the frontier
drawn only where there is one, the seeds' mean per setting."""

import pytest
from matplotlib.colors import to_hex

from iaat_jax.analysis import figures


def _swept(run, robust_at_01: float):
    """`run` also evaluated at eps 0.1."""
    run.sweep["worst_case"].insert(0, {"epsilon": 0.1, "robust_accuracy": robust_at_01})
    return run


def test_the_robustness_curve_draws_one_line_per_setting(tmp_path, monkeypatch):
    from test_runs import run_of

    runs = [_swept(run_of(f"a{s}", s, 0.3, 0.9, 0.6 + s / 100), 0.8) for s in range(3)]
    runs += [_swept(run_of("b0", 0, 0.1, 0.9, 0.2), 0.7)]
    drawn = []
    monkeypatch.setattr(
        figures.plt.Axes, "plot", lambda self, x, y, *a, **k: drawn.append((list(y), k["label"]))
    )
    assert figures.plot_robustness_curve(runs, tmp_path)
    assert [label for _, label in drawn] == ["PGD-AT eps 0.3 (3 seeds)", "PGD-AT eps 0.1"]
    assert drawn[0][0] == pytest.approx([0.8, 0.61])  # the seeds' mean at each radius


def test_runs_evaluated_at_one_radius_get_a_warning_not_a_one_point_curve(tmp_path):
    from test_runs import run_of

    runs = [run_of(f"a{s}", s, 0.3, 0.9, 0.6) for s in range(2)] + [run_of("b0", 0, 0.1, 0.9, 0.2)]
    warnings = []
    assert not figures.plot_robustness_curve(runs, tmp_path, warn=warnings.append)
    assert not (tmp_path / "robustness_curve.png").exists()
    assert len(warnings) == 1 and "one test radius (0.3)" in warnings[0]
    assert "--config.sweep_epsilons" in warnings[0]
    # one setting with two radii is enough for a curve
    assert figures.plot_robustness_curve(
        [_swept(runs[2], 0.7), *runs[:2]], tmp_path, warn=warnings.append
    )
    assert (tmp_path / "robustness_curve.png").exists() and len(warnings) == 1


def test_the_pareto_legend_names_settings_and_draws_a_frontier_only_where_there_is_one(
    tmp_path, monkeypatch
):
    from test_runs import run_of

    def iaat(seed):
        run = run_of(f"iaat_s{seed}", seed, 0.3, 0.968, 0.63)
        run.config["method"] = "iaat"
        return run

    legends = []
    close = figures.plt.close

    def keep_legend(figure):
        legends.append([t.get_text() for t in figure.axes[0].get_legend().get_texts()])
        close(figure)

    monkeypatch.setattr(figures.plt, "close", keep_legend)
    one_radius = [run_of(f"p{s}", s, 0.3, 0.965, 0.81) for s in range(3)]
    iaat_runs = [iaat(s) for s in range(3)]
    figures.plot_pareto(one_radius + iaat_runs, 0.3, tmp_path, lambda w: None)
    assert legends[-1] == ["PGD-AT eps 0.3 (3 seeds)", "IAAT eps 0.3 (3 seeds)"]
    two_radii = one_radius + [run_of("q0", 0, 0.2, 0.97, 0.2)]
    figures.plot_pareto(two_radii + iaat_runs, 0.3, tmp_path, lambda w: None)
    assert "PGD-AT frontier (non-dominated radii)" in legends[-1]
    gamma = [iaat(s) for s in range(2)]
    for run in gamma:
        run.config["iaat_gamma"] = 0.15
    colors = []
    monkeypatch.setattr(
        figures.plt,
        "close",
        lambda f: colors.append(
            [to_hex(h.get_color()) for h in f.axes[0].get_legend().legend_handles]
        ),
    )
    figures.plot_pareto(one_radius + iaat_runs + gamma, 0.3, tmp_path, lambda w: None)
    assert len(colors[-1]) == 3 and len(set(colors[-1][1:])) == 2  # two IAAT settings, two colours
    monkeypatch.setattr(figures.plt, "close", keep_legend)
    figures.plot_pareto(one_radius + iaat_runs + gamma, 0.3, tmp_path, lambda w: None)
    assert legends[-1][1:] == ["IAAT eps 0.3 (3 seeds)", "IAAT eps 0.3, iaat_gamma=0.15 (2 seeds)"]


def test_every_figure_gives_a_setting_one_name_and_one_colour(tmp_path, monkeypatch):
    """The Pareto plot and the robustness curve of one report agree on each setting's label
    and colour (they once named PGD-AT 'PGD' in one and changed IAAT's colour between them)."""
    from test_runs import run_of

    def iaat(name, seed, gamma=None):
        run = run_of(name, seed, 0.3, 0.968, 0.63)
        run.config["method"] = "iaat"
        if gamma:
            run.config["iaat_gamma"] = gamma
        return run

    runs = [run_of(f"p{s}", s, 0.3, 0.965, 0.81) for s in range(2)]
    runs += [run_of("q0", 0, 0.1, 0.99, 0.2), iaat("i0", 0), iaat("i1", 1), iaat("g0", 0, 0.15)]
    runs = [_swept(run, 0.9) for run in runs]  # two test radii: a curve to draw
    seen = {}
    close = figures.plt.close

    def keep(figure):
        legend = figure.axes[0].get_legend()
        seen[len(seen)] = {
            t.get_text(): to_hex(h.get_color())
            for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)
            if "frontier" not in t.get_text()
        }
        close(figure)

    monkeypatch.setattr(figures.plt, "close", keep)
    styles = figures.setting_styles(runs)
    figures.plot_pareto(runs, 0.3, tmp_path, lambda w: None, None, styles)
    figures.plot_robustness_curve(runs, tmp_path, styles)
    assert seen[0] == seen[1] and len(seen[0]) == 4
    assert set(seen[0]) == {
        "PGD-AT eps 0.3 (2 seeds)",
        "PGD-AT eps 0.1",
        "IAAT eps 0.3 (2 seeds)",
        "IAAT eps 0.3, iaat_gamma=0.15",
    }
    assert len(set(seen[0].values())) == 4  # four settings, four colours
