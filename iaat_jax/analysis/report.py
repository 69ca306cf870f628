"""Figures and a summary of training runs: python -m iaat_jax.report RUN_DIR [...] --out OUT.

Writes into OUT: pareto.png (clean vs robust accuracy, fixed-radius PGD runs drawn as the
frontier, IAAT runs marked; paper Fig 3), robustness_curve.png (robust accuracy over test radii,
Fig 4), epsilon_over_epochs.png (mean and tracked radii per epoch, Fig 5), epsilon_samples.png
(training images with the smallest and largest radii, Fig 2), epsilon_histogram.png (final
radii per class) and report.md; figures.py draws them. Robust accuracy comes from each run's
eval.json only (`--suite`: one suite's number, e.g. autoattack; default: the worst case over
every attack it ran), and each figure says which; a run that lacks what a figure needs is
named in a warning, never filled in with its per-epoch PGD number.
"""

import argparse
import logging as python_logging
import os
import sys

import ml_collections
import numpy as np
from etils import epath

from iaat_jax.analysis import figures
from iaat_jax.analysis.runs import (
    ReportError,
    Run,
    differing_settings,
    group_by_setting,
    load_run,
    measure_name,
    setting_label,
    table_agreement,
    trained,
)


def _first_iaat_with_table(runs: list[Run], figure_name: str, warn) -> Run | None:
    """The first IAAT run with a radius table and real training images (not fake data)."""
    for run in runs:
        if run.adaptive and run.table is not None and not run.config.get("fake_data"):
            return run
    warn(f"{figure_name}: no IAAT run on real data with an epsilon_table.npy")
    return None


def _mean_spread(values: list[float | None]) -> str:
    """'mean ± sd (min-max)' over the values that exist; '-' if none."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return (
        f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} "
        f"({min(values):.3f}-{max(values):.3f})"
    )


def _setting_and_runs(group: list[Run], groups: list[list[Run]]) -> str:
    """The setting's label and its runs' names: 'IAAT eps 0.3 (i0, i1)'."""
    return f"{setting_label(group[0], groups)} ({', '.join(r.name for r in group)})"


def ranking_table(runs: list[Run], test_epsilon: float, suite: str | None = None) -> list[str]:
    """Markdown rows: the settings by mean (clean + robust @ test_epsilon) over their seeds,
    best first, the rule a hyper-parameter search on held-out data picks by; settings
    without that robust accuracy are left out."""
    groups = group_by_setting(runs)
    scored = []
    for group in groups:
        clean = [r.clean_accuracy() for r in group]
        robust = [r.robust_accuracy(test_epsilon, suite) for r in group]
        if None not in clean + robust:
            score = float(np.mean(clean) + np.mean(robust))
            scored.append((score, group[0].method, _setting_and_runs(group, groups)))
    scored.sort(key=lambda entry: -entry[0])
    return [
        f"| clean + robust @ {test_epsilon:.4g} | method | setting |",
        "| --- | --- | --- |",
        *(f"| {score:.3f} | {method} | {label} |" for score, method, label in scored),
    ]


def seed_table(runs: list[Run], test_epsilon: float, suite: str | None = None) -> list[str]:
    """Markdown rows: each setting over its seeds, runs that did not train counted in."""
    header = "| setting | seeds | did not train | clean | robust @ " + f"{test_epsilon:.4g} |"
    lines = [header, "| --- | --- | --- | --- | --- |"]
    groups = group_by_setting(runs)
    for group in groups:
        failed = [r.name for r in group if not trained(r)]
        lines.append(
            f"| {_setting_and_runs(group, groups)} | {len(group)} | "
            f"{', '.join(failed) or 'none'} | {_mean_spread([r.clean_accuracy() for r in group])}"
            f" | {_mean_spread([r.robust_accuracy(test_epsilon, suite) for r in group])} |"
        )
    return lines


def paper_table(runs: list[Run], test_epsilon: float, suite: str | None) -> list[str]:
    """Markdown rows in the form of the paper's Table 1, measured as the field now does: each
    setting's clean accuracy, PGD (cross-entropy, the sweep's) at every test radius, and the
    suite (or the worst case) at test_epsilon beside it; [] where no run has a PGD sweep."""
    radii = sorted(
        {round(row["epsilon"], 9) for r in runs if r.sweep for row in r.sweep.get("attacks", [])}
        - {0.0}
    )
    steps = {row["steps"] for r in runs if r.sweep for row in r.sweep.get("attacks", [])}
    if not radii:
        return []
    pgd = f"PGD-{'/'.join(map(str, sorted(steps)))} CE"
    header = ["setting", "clean"] + [f"{pgd} @ {e:.4g}" for e in radii]
    header.append(f"{measure_name(suite)} @ {test_epsilon:.4g}")
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    groups = group_by_setting(runs)
    for group in groups:
        cells = [
            _setting_and_runs(group, groups),
            _mean_spread([r.clean_accuracy() for r in group]),
        ]
        cells += [_mean_spread([r.pgd_accuracy(e) for r in group]) for e in radii]
        cells.append(_mean_spread([r.robust_accuracy(test_epsilon, suite) for r in group]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def agreement_table(runs: list[Run]) -> list[str]:
    """Markdown rows: each further IAAT setting's radius tables against the first IAAT
    setting's, seed by seed (mean over the seeds both have); [] with fewer than two."""
    groups = [g for g in group_by_setting(runs) if g[0].adaptive]
    if len(groups) < 2:
        return []
    reference = {r.config.get("seed"): r for r in groups[0] if r.table is not None}
    lines = [
        f"## Radius tables against {', '.join(r.name for r in groups[0])}",
        "",
        "| setting | seeds | mean abs difference | rank correlation (Spearman) |",
        "| --- | --- | --- | --- |",
    ]
    for group in groups[1:]:
        pairs = [(r, reference.get(r.config.get("seed"))) for r in group if r.table is not None]
        pairs = [(r, ref) for r, ref in pairs if ref is not None and len(ref.table) == len(r.table)]
        found = [table_agreement(r.table, ref.table) for r, ref in pairs]
        if not found:
            continue
        cells = [
            _mean_spread([f[name] for f in found])
            for name in ("mean_abs_difference", "rank_correlation")
        ]
        label = differing_settings(group[0], groups[0][0])
        lines.append(f"| {label} | {len(found)} | {cells[0]} | {cells[1]} |")
    return lines + [""]


def write_markdown(runs, test_epsilons, test_epsilon, verdicts, warnings, out, suite, drawn):
    """report.md: the per-run table; where runs were evaluated, the seed, ranking and
    frontier sections; the figures that were drawn (`drawn`); the warnings."""
    header = ["run", "method", "train eps", "seed", "clean"]
    header += [f"robust @ {e:.4g}" for e in test_epsilons]
    lines = ["# IAAT report", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for run in runs:
        train_eps = f"{run.train_epsilon:.4g}" if run.has_radius else "-"
        cells = [run.name, run.method, train_eps, str(run.config.get("seed", "?"))]
        clean = _fmt(run.clean_accuracy())
        cells.append(clean if trained(run) else f"{clean} (did not train)")
        cells += [_fmt(run.robust_accuracy(e, suite)) for e in test_epsilons]
        lines.append("| " + " | ".join(cells) + " |")
    splits = sorted({run.sweep.get("split", "test") for run in runs if run.sweep})
    lines += [""]
    if splits:
        lines += [f"Evaluated on: {', '.join(splits)} (eval.json's split)."]
    lines += [
        f"Robust accuracy: {measure_name(suite)} (its settings are there); '-' where a",
        "run's eval.json lacks it. A run whose clean accuracy stayed under twice chance (for",
        "its dataset's class count) is marked as not trained and still counted below.",
        "",
        "## Over seeds (mean ± standard deviation, min-max)",
        "",
        *seed_table(runs, test_epsilon, suite),
        "",
        *agreement_table(runs),
    ]
    table = paper_table(runs, test_epsilon, suite)
    if table:
        lines += [
            "## The paper's Table 1, with the attack suite beside PGD (mean ± sd over seeds)",
            "",
            *table,
            "",
        ]
    ranking = ranking_table(runs, test_epsilon, suite)
    if len(ranking) > 2:  # a header and at least one setting
        lines += [
            "## Ranked by mean clean + robust accuracy (the hyper-parameter search's rule)",
            "",
            *ranking,
            "",
        ]
    if splits:
        lines += [f"## Beyond the frontier? (test eps {test_epsilon:.4g})", ""]
        lines += [f"- {v}" for v in verdicts] or ["- no evaluated IAAT and PGD-AT runs to compare"]
        lines += [""]
    lines += [f"![{name}]({name}.png)" for name in drawn]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    (out / "report.md").write_text("\n".join(lines) + "\n")


FIGURES = (
    "pareto",
    "robustness_curve",
    "epsilon_over_epochs",
    "epsilon_samples",
    "epsilon_histogram",
)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def make_report(
    run_dirs: list[str], out_dir: str, test_epsilon: float | None = None, suite: str | None = None
) -> list[str]:
    """Write every figure and report.md for `run_dirs` into `out_dir`; return the warnings.
    `suite`: the robust accuracy of that suite (default: eval.json's worst case)."""
    runs = [load_run(d) for d in run_dirs]
    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []
    warn = warnings.append
    if test_epsilon is None:  # the radius the IAAT runs (else the first run) trained at
        test_epsilon = next((r.train_epsilon for r in runs if r.adaptive), runs[0].train_epsilon)
    test_epsilons = sorted(
        {round(row["epsilon"], 9) for r in runs if r.sweep for row in r.sweep["worst_case"]}
        | {round(test_epsilon, 9)}
    )
    unevaluated = [run.name for run in runs if run.sweep is None]
    if unevaluated:
        warn(
            f"{len(unevaluated)} of {len(runs)} runs have no eval.json ({', '.join(unevaluated)}):"
            " no robust accuracy, Pareto plot or robustness curve for them; evaluate each with "
            "python -m iaat_jax.main --mode=evaluate --workdir=DIR, then rerun this report"
        )
    splits = {r.sweep.get("split", "test") for r in runs if r.sweep}  # older eval.json: test
    if len(splits) > 1:
        warn(
            f"the runs were evaluated on different splits ({', '.join(sorted(splits))}): "
            "their numbers are not comparable; report each split's runs apart"
        )
    for name in FIGURES:  # a figure not drawn this time must not linger from an earlier report
        (out / f"{name}.png").unlink(missing_ok=True)
    (out / "pareto.json").unlink(missing_ok=True)
    styles = figures.setting_styles(runs)
    verdicts = figures.plot_pareto(runs, test_epsilon, out, warn, suite, styles)
    figures.plot_robustness_curve(runs, out, styles, warn)
    figures.plot_epsilon_over_epochs(runs, out, warn, styles)
    run = _first_iaat_with_table(runs, "epsilon_samples.png / epsilon_histogram.png", warn)
    if run is not None:
        from iaat_jax.data import input_pipeline  # TensorFlow only where real data is read

        order = np.argsort(run.table, kind="stable")
        labels, images = input_pipeline.training_examples(
            ml_collections.ConfigDict(run.config), np.concatenate([order[:8], order[-8:]])
        )
        figures.plot_epsilon_samples(run, images, labels, out)
        figures.plot_epsilon_histogram(run, labels, out)
    drawn = [name for name in FIGURES if (out / f"{name}.png").exists()]
    write_markdown(runs, test_epsilons, test_epsilon, verdicts, warnings, out, suite, drawn)
    return warnings


def quiet_tensorflow() -> None:
    """Keep TensorFlow's start-up lines and deprecation notices (it reads the training images
    of epsilon_samples.png) out of the console: the report's own warnings are what matters."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    python_logging.getLogger("tensorflow").setLevel(python_logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m iaat_jax.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("runs", nargs="+", help="training workdirs")
    parser.add_argument("--out", required=True, help="directory for the figures and report.md")
    parser.add_argument(
        "--test_epsilon",
        type=float,
        default=None,
        help="radius of pareto.png (default: the IAAT runs' training eps)",
    )
    parser.add_argument(
        "--suite",
        default=None,
        help="robust accuracy of this eval.json suite (e.g. autoattack) in pareto.png and the "
        "tables (default: the worst case over every attack eval.json ran)",
    )
    args = parser.parse_args(argv)
    quiet_tensorflow()
    try:
        warnings = make_report(args.runs, args.out, args.test_epsilon, args.suite)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {args.out}/report.md and its figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
