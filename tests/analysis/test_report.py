"""The report: every figure is a valid PNG, report.md holds the numbers, bad dirs are clear."""

import shutil

import matplotlib.pyplot as plt
import numpy as np
import pytest

from iaat_jax.analysis import figures, frontier, report

FIGURES = (
    "pareto",
    "robustness_curve",
    "epsilon_over_epochs",
    "epsilon_samples",
    "epsilon_histogram",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # trains two runs (shared fixture), about a minute
def test_report_writes_every_figure_and_the_measured_numbers(trained_runs, tmp_path):
    iaat_dir, iaat_results = trained_runs["iaat"]
    pgd_dir, pgd_results = trained_runs["pgd"]
    out = tmp_path / "report"
    assert report.main([str(iaat_dir), str(pgd_dir), "--out", str(out)]) == 0
    for name in FIGURES:
        path = out / f"{name}.png"
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        assert plt.imread(path).shape[0] > 100  # decodes as an image of real size
    text = (out / "report.md").read_text()
    for results in (iaat_results, pgd_results):
        assert f"{results['clean_accuracy']:.3f}" in text
        for row in results["worst_case"]:
            assert f"{row['robust_accuracy']:.3f}" in text
    assert "robust @ 0.15" in text and "Beyond the frontier?" in text
    assert f"Evaluated on: {iaat_results['split']} (eval.json's split)." in text

    # the verdict is the IAAT run's frontier gap, computed from the runs' own numbers at eps 0.3
    def at_03(results):
        return next(r["robust_accuracy"] for r in results["worst_case"] if r["epsilon"] == 0.3)

    gap = frontier.frontier_gap(
        [(at_03(pgd_results), pgd_results["clean_accuracy"])],
        at_03(iaat_results),
        iaat_results["clean_accuracy"],
    )
    where = "beyond" if gap > 0 else "not beyond"
    assert f"-> {where} the fixed-eps frontier ({gap:+.3f} clean accuracy)" in text


@pytest.mark.slow  # trains two runs (shared fixture), about a minute
def test_runs_missing_what_a_figure_needs_are_warned_about_not_fatal(trained_runs, tmp_path):
    pgd_copy = tmp_path / "pgd_without_sweep"
    shutil.copytree(trained_runs["pgd"][0], pgd_copy)
    (pgd_copy / "eval.json").unlink()
    warnings = report.make_report([str(pgd_copy)], str(tmp_path / "out"), test_epsilon=0.15)
    assert any("1 of 1 runs have no eval.json (pgd_without_sweep)" in w for w in warnings)
    assert any("no IAAT run" in w for w in warnings)
    assert not (tmp_path / "out" / "pareto.png").exists()  # nothing to draw: no empty figure


def test_missing_or_empty_run_directory_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for directory, message in (
        (tmp_path / "nope", "does not exist"),
        (tmp_path / "empty", "holds no training run"),
    ):
        assert report.main([str(directory), "--out", str(tmp_path / "out")]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and error[0].startswith("error: ") and message in error[0]


def test_the_seed_table_gives_mean_spread_and_names_runs_that_did_not_train():
    from test_runs import run_of

    runs = [
        run_of("a0", 0, 0.3, 0.92, 0.65),
        run_of("a1", 1, 0.3, 0.11, 0.10),
        run_of("a2", 2, 0.3, 0.93, 0.66),
    ]
    rows = report.seed_table(runs, 0.3)
    assert len(rows) == 3  # header, rule, one setting
    cells = [c.strip() for c in rows[2].strip("|").split("|")]
    assert cells[1:3] == ["3", "a1"]
    clean = np.array([0.92, 0.11, 0.93])  # the collapsed seed is in the mean
    assert cells[3] == f"{clean.mean():.3f} ± {clean.std(ddof=1):.3f} (0.110-0.930)"


def test_the_search_ranking_orders_settings_by_mean_clean_plus_robust_over_seeds():
    from test_runs import run_of

    def iaat(name, seed, gamma, clean, robust):
        run = run_of(name, seed, 0.3, clean, robust)
        run.config.update(method="iaat", iaat_gamma=gamma)
        return run

    runs = [
        run_of("p0", 0, 0.3, 0.95, 0.80),  # 1.75
        iaat("a0", 0, 0.075, 0.97, 0.60),
        iaat("a1", 1, 0.075, 0.97, 0.90),  # mean 1.72
        iaat("b0", 0, 0.15, 0.99, 0.74),  # 1.73: the best IAAT setting by a single seed's luck
        run_of("q0", 0, 0.4, 0.95, 0.80),
    ]
    runs.insert(4, iaat("c0", 0, 0.075, 0.90, 0.70))
    runs[4].config["epsilon"] = 0.4  # named by its eps once, not also as 'epsilon=0.4'
    runs[-1].sweep["worst_case"] = []  # no robust accuracy at 0.3: left out
    rows = report.ranking_table(runs, 0.3)
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]
    assert [c[:2] for c in cells] == [
        ["1.750", "pgd"], ["1.730", "iaat"], ["1.720", "iaat"], ["1.600", "iaat"]
    ]  # fmt: skip
    assert cells[1][2] == "IAAT eps 0.3, iaat_gamma=0.15 (b0)" and "(a0, a1)" in cells[2][2]
    assert cells[3][2] == "IAAT eps 0.4 (c0)"


def test_iaat_variants_are_named_by_what_differs_and_their_tables_compared_seed_by_seed():
    from scipy import stats
    from test_runs import run_of

    rng = np.random.default_rng(0)
    runs = []
    for probe_steps in (None, 2):
        for seed in (0, 1):
            run = run_of(f"p{probe_steps}_{seed}", seed, 0.3, 0.96, 0.7)
            run.config.update(method="iaat", probe_steps=probe_steps)
            run.table = np.round(rng.uniform(0, 0.4, 50), 1).astype(np.float32)  # with ties
            runs.append(run)
    rows = report.seed_table(runs, 0.3)
    assert "IAAT eps 0.3 (" in rows[2] and "IAAT eps 0.3, probe_steps=2 (" in rows[3]
    lines = report.agreement_table(runs)
    assert lines[0] == "## Radius tables against pNone_0, pNone_1"
    cells = [c.strip() for c in lines[4].strip("|").split("|")]
    assert cells[:2] == ["probe_steps=2", "2"]
    differences = [np.mean(np.abs(runs[2 + s].table - runs[s].table)) for s in (0, 1)]
    ranks = [stats.spearmanr(runs[2 + s].table, runs[s].table).statistic for s in (0, 1)]
    assert cells[2].startswith(f"{np.mean(differences):.3f} ± {np.std(differences, ddof=1):.3f}")
    assert cells[3].startswith(f"{np.mean(ranks):.3f} ± ")
    assert report.agreement_table(runs[:2]) == []  # one IAAT setting: nothing to compare


def test_runs_evaluated_on_different_splits_are_warned_about(tmp_path):
    from test_runs import write_run

    sweep = {"clean_accuracy": 0.9, "worst_case": [{"epsilon": 0.3, "robust_accuracy": 0.7}]}
    write_run(tmp_path / "test_run", [{"step": 1}], sweep)
    write_run(tmp_path / "held_out_run", [{"step": 1}], {**sweep, "split": "train[3000:]"})
    runs = [str(tmp_path / "test_run"), str(tmp_path / "held_out_run")]
    warnings = report.make_report(runs, str(tmp_path / "out"), 0.3)
    assert any("different splits (test, train[3000:])" in w for w in warnings)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "Evaluated on: test, train[3000:] (eval.json's split)." in text


def test_a_report_without_evaluations_draws_no_empty_figure_and_says_so_once(tmp_path, capsys):
    from test_runs import write_run

    records = [{"step": 50, "epoch": 0, "clean_accuracy": 0.9, "robust_accuracy": 0.5}]
    records[0]["epsilon_mean"] = 0.1
    write_run(tmp_path / "a", records)
    assert report.main([str(tmp_path / "a"), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert err.count("no eval.json") == 1 and "--mode=evaluate" in err
    assert "No artists" not in err and "tensorflow" not in err.lower()
    text = (tmp_path / "out" / "report.md").read_text()
    for absent in ("pareto", "robustness_curve", "Evaluated on", "Ranked by", "Beyond the"):
        assert absent not in text
    assert not (tmp_path / "out" / "pareto.png").exists()
    assert (tmp_path / "out" / "epsilon_over_epochs.png").exists()


def test_the_paper_table_puts_pgd_at_each_radius_beside_the_suite_and_pareto_json_holds_points(
    tmp_path,
):
    import json

    from test_runs import run_of

    def evaluated(name, seed, epsilon, clean, pgd, suite):
        run = run_of(name, seed, epsilon, clean, min(pgd.values()))
        run.sweep["attacks"] = [
            {"name": f"pgd-{loss}", "epsilon": e, "steps": 20, "robust_accuracy": a - shift}
            for e, a in pgd.items()
            for loss, shift in (("ce", 0.0), ("margin", 0.01))
        ]
        run.sweep["autoattack"] = [
            {"suite": "autoattack", "epsilon": 8 / 255, "robust_accuracy": suite}
        ]
        return run

    radius = 8 / 255  # a radius that rounds badly at 6 decimals
    runs = [
        evaluated("p4_0", 0, 4 / 255, 0.90, {0.0: 0.90, radius: 0.40}, 0.35),
        evaluated("p4_1", 1, 4 / 255, 0.92, {0.0: 0.92, radius: 0.44}, 0.37),
        evaluated("p8_0", 0, radius, 0.85, {0.0: 0.85, radius: 0.50}, 0.45),
    ]
    lines = report.paper_table(runs, radius, "autoattack")
    assert (
        lines[0] == "| setting | clean | PGD-20 CE @ 0.03137 | autoattack (eval.json) @ 0.03137 |"
    )
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[1].startswith("0.910 ± 0.014") and cells[2].startswith("0.420 ± 0.028")
    assert cells[3].startswith("0.360 ± 0.014")
    assert [c.strip() for c in lines[3].strip("|").split("|")][1:] == ["0.850", "0.500", "0.450"]

    runs.append(evaluated("i0", 0, radius, 0.95, {0.0: 0.95, radius: 0.6}, 0.40))
    runs[-1].config["method"] = "iaat"
    figures.plot_pareto(runs, radius, tmp_path, lambda warning: None, "autoattack")
    drawn = json.loads((tmp_path / "pareto.json").read_text())
    assert [(s["method"], s["robust"], s["clean"]) for s in drawn["settings"]] == [
        ("pgd", pytest.approx(0.36), pytest.approx(0.91)),
        ("pgd", 0.45, 0.85),
        ("iaat", 0.40, 0.95),
    ]
    assert drawn["frontier"] == [
        {"robust": pytest.approx(0.36), "clean": pytest.approx(0.91)},
        {"robust": 0.45, "clean": 0.85},
    ]
    assert "beyond the fixed-eps frontier" in drawn["verdicts"][0]
