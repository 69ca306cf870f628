"""The report's figures (paper Figs 2-5), drawn from loaded runs; see analysis/report.py."""

import dataclasses
import itertools
import json
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from etils import epath  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from iaat_jax.analysis import frontier
from iaat_jax.analysis.runs import (
    Run,
    group_by_setting,
    label_with_seeds,
    measure_name,
    setting_label,
    setting_of,
)

METHOD_STYLES = {  # marker, size and the colour of a method's first setting
    "iaat": ("*", 14, "tab:red"),
    "clean": ("s", 8, "tab:gray"),
    "pgd": ("o", 7, "tab:blue"),
    "trades": ("D", 8, "tab:green"),
    "mart": ("^", 9, "tab:olive"),
    "iaat_trades": ("P", 12, "tab:orange"),
    "iaat_mart": ("X", 12, "tab:purple"),
}
FURTHER_COLOURS = ("tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


@dataclasses.dataclass(frozen=True)
class Style:
    """How every figure of a report draws one setting: its name, colour and marker."""

    label: str  # the setting and its seed count, e.g. 'IAAT eps 0.3 (3 seeds)'
    setting: str  # the setting alone, e.g. 'IAAT eps 0.3'
    colour: Any
    marker: str = "o"
    size: int = 8


def setting_styles(runs: list[Run]) -> dict[str, Style]:
    """One name and one colour per setting (keyed by runs.setting_of), for every figure
    of a report: a method's first setting in its own colour, PGD-AT's radii in shades of blue
    (light to dark with the radius), any further setting in a colour of its own."""
    groups = group_by_setting(runs)
    pgd_radii = sorted({g[0].train_epsilon for g in groups if g[0].frontier})
    blues = plt.cm.Blues(np.linspace(0.45, 0.95, len(pgd_radii)) if len(pgd_radii) > 1 else [0.75])
    further, first_of_method, styles = itertools.cycle(FURTHER_COLOURS), set(), {}
    for group in groups:
        method = group[0].method
        marker, size, colour = METHOD_STYLES.get(method, ("o", 8, "k"))
        if group[0].frontier:
            colour = blues[pgd_radii.index(group[0].train_epsilon)]
        elif method in first_of_method:
            colour = next(further)
        first_of_method.add(method)
        setting = setting_label(group[0], groups)
        style = Style(label_with_seeds(group, groups), setting, colour, marker, size)
        styles[setting_of(group[0])] = style
    return styles


def style_of(run: Run, styles: dict[str, Style]) -> Style:
    """The style of the setting `run` belongs to."""
    return styles[setting_of(run)]


def plot_pareto(
    runs: list[Run],
    test_epsilon: float,
    out: epath.Path,
    warn,
    suite: str | None = None,
    styles: dict[str, Style] | None = None,
) -> list[str]:
    """pareto.png and the numbers it draws (pareto.json: frontier.Frontier's); returns its
    verdicts, a line per IAAT setting saying whether it is beyond the frontier. Draws nothing
    (and returns no verdicts) where no run has the accuracy to draw.

    A setting run with several seeds is drawn at its mean with one-standard-deviation bars,
    each seed as a small dot (a run that did not train included); the frontier joins the
    non-dominated fixed-radius means.
    """
    styles = styles or setting_styles(runs)
    result = frontier.frontier(runs, test_epsilon, suite)
    for warning in result.warnings:
        warn(warning)
    if not result.points:
        return []
    figure, axis = plt.subplots(figsize=(6.5, 5))
    for point in result.points:
        style = style_of(point.runs[0], styles)
        for run in point.runs if len(point.runs) > 1 else ():
            clean, robust = run.clean_accuracy(), run.robust_accuracy(test_epsilon, suite)
            if clean is not None and robust is not None:
                axis.plot(robust, clean, ".", color=style.colour, alpha=0.4)
        axis.errorbar(
            point.robust,
            point.clean,
            xerr=point.robust_sd,
            yerr=point.clean_sd,
            fmt=style.marker,
            markersize=style.size,
            color=style.colour,
            label=style.label,
        )
    fixed_settings = sum(p.runs[0].frontier for p in result.points)
    if fixed_settings > 1 and len(result.front) > 1:  # one non-dominated setting: a point
        axis.plot(
            [p[0] for p in result.front],
            [p[1] for p in result.front],
            "-",
            color="tab:blue",
            alpha=0.6,
            label="PGD-AT frontier (non-dominated radii)",
        )
    (out / "pareto.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    axis.set(
        xlabel=f"robust accuracy at eps {test_epsilon:.4g}: {measure_name(suite)}",
        ylabel="clean accuracy",
        title="Clean vs robust accuracy (mean and sd over seeds; dots: seeds)",
    )
    axis.title.set_fontsize(10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(out / "pareto.png", dpi=120)
    plt.close(figure)
    return result.verdicts


def _shared_radii(group: list[Run]) -> list[float]:
    """The test radii every run of a setting was evaluated at, ascending."""
    curves = [{round(r["epsilon"], 6) for r in run.sweep["worst_case"]} for run in group]
    return sorted(set.intersection(*curves))


def plot_robustness_curve(
    runs: list[Run], out: epath.Path, styles: dict[str, Style] | None = None, warn=None
) -> bool:
    """robustness_curve.png: eval.json's worst case over the test radii, one line per setting
    (its seeds' mean, a band of one standard deviation); False, and nothing drawn, where no
    run has an eval.json, or where no setting has two test radii (then `warn` says why)."""
    styles = styles or setting_styles(runs)
    groups = [[r for r in g if r.sweep] for g in group_by_setting(runs)]
    groups = [g for g in groups if g]
    if not groups:
        return False
    if all(len(_shared_radii(group)) < 2 for group in groups):
        if warn is not None:
            radii = sorted({e for group in groups for e in _shared_radii(group)})
            warn(
                f"robustness_curve.png not drawn: the runs were evaluated at one test radius "
                f"({', '.join(f'{e:g}' for e in radii) or 'none in common'}), a curve needs two;"
                " evaluate over several with --config.sweep_epsilons (empty: 9 radii)"
            )
        return False
    figure, axis = plt.subplots(figsize=(8, 4.5))
    suites = sorted({a["suite"] for g in groups for r in g for a in r.sweep.get("autoattack", [])})
    for group in groups:
        style = style_of(group[0], styles)
        curves = [
            {round(r["epsilon"], 6): r["robust_accuracy"] for r in run.sweep["worst_case"]}
            for run in group
        ]
        radii = _shared_radii(group)
        values = np.array([[c[e] for e in radii] for c in curves])
        mean = values.mean(axis=0)
        axis.plot(radii, mean, "-", marker=style.marker, color=style.colour, label=style.label)
        if len(group) > 1:
            spread = values.std(axis=0, ddof=1)
            axis.fill_between(radii, mean - spread, mean + spread, color=style.colour, alpha=0.2)
    attacks = "PGD" + (f" and {', '.join(suites)} where it ran" if suites else "")
    axis.set(
        xlabel="test eps (L-inf)",
        ylabel="robust accuracy (worst case)",
        title=f"Robustness over test radii: worst case of {attacks}",
        ylim=(0, 1),
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    figure.tight_layout()
    figure.savefig(out / "robustness_curve.png", dpi=120)
    plt.close(figure)
    return True


def plot_epsilon_over_epochs(
    runs: list[Run], out: epath.Path, warn, styles: dict[str, Style] | None = None
) -> bool:
    """epsilon_over_epochs.png: each IAAT run's mean radius (p10-p90 band) per epoch, and its
    first run's tracked examples, against the training eps; False where there is none."""
    styles = styles or setting_styles(runs)
    iaat = [run for run in runs if run.adaptive and run.epoch_evals]
    if not iaat:
        warn("epsilon_over_epochs.png: no IAAT run with per-epoch records")
        return False
    figure, (mean_axis, tracked_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for run in iaat:
        epochs = [r["epoch"] + 1 for r in run.epoch_evals]
        style = style_of(run, styles)
        label = f"{style.setting}, {run.name}"
        mean_axis.plot(
            epochs,
            [r["epsilon_mean"] for r in run.epoch_evals],
            "o-",
            color=style.colour,
            label=f"{label}: mean",
        )
        if "epsilon_p10" in run.epoch_evals[0]:
            mean_axis.fill_between(
                epochs,
                [r["epsilon_p10"] for r in run.epoch_evals],
                [r["epsilon_p90"] for r in run.epoch_evals],
                color=style.colour,
                alpha=0.15,
            )
    run = iaat[0]
    epochs = [r["epoch"] + 1 for r in run.epoch_evals]
    keys = sorted(
        {k for r in run.epoch_evals for k in r if k.startswith("epsilon_id_")},
        key=lambda k: int(k.rsplit("_", 1)[1]),
    )
    for key in keys:
        tracked_axis.plot(
            epochs,
            [r.get(key, np.nan) for r in run.epoch_evals],
            ".-",
            label=f"id {key.rsplit('_', 1)[1]}",
        )
    for axis in (mean_axis, tracked_axis):
        axis.axhline(run.train_epsilon, color="k", ls="--", lw=1, label="training eps")
        axis.grid(alpha=0.3)
        axis.set(xlabel="epoch", ylabel="eps")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    mean_axis.set_title("mean radius over the training set (band: p10-p90)", fontsize=10)
    tracked_axis.set_title(f"radius of tracked training examples ({run.name})", fontsize=10)
    mean_axis.legend(fontsize=7)
    tracked_axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(out / "epsilon_over_epochs.png", dpi=120)
    plt.close(figure)
    return True


def plot_epsilon_samples(
    run: Run, images: dict, labels: np.ndarray, out: epath.Path, count: int = 8
) -> None:
    """Training images with the `count` smallest and largest radii (Fig 2), each titled with
    its label and radius (a radius of 0 often marks a mislabelled digit); a row says how many
    examples tie at its end."""
    order = np.argsort(run.table, kind="stable")
    rows = {"smallest eps": order[:count], "largest eps": order[::-1][:count]}
    figure, axes = plt.subplots(2, count, figsize=(1.4 * count, 3.9))
    for row, (title, ids) in enumerate(rows.items()):
        end = run.table[ids[0]]
        tied = int(np.sum(run.table == end))
        if tied > count:
            title += f"\n({tied} tied at {end:.3f};\n{count} shown, by id)"
        for column, example_id in enumerate(ids):
            axis = axes[row, column]
            image = images[int(example_id)]
            axis.imshow(
                image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=1
            )
            axis.set_title(
                f"label {labels[example_id]}\neps {run.table[example_id]:.3f}", fontsize=8
            )
            axis.axis("off")
        axes[row, 0].text(
            -0.3,
            0.5,
            title,
            transform=axes[row, 0].transAxes,
            rotation=90,
            va="center",
            ha="right",
            fontsize=8,
        )
    figure.suptitle(f"Training examples by assigned radius ({run.name})")
    figure.tight_layout()
    figure.savefig(out / "epsilon_samples.png", dpi=120)
    plt.close(figure)


def plot_epsilon_histogram(run: Run, labels: np.ndarray, out: epath.Path) -> None:
    """Final radii per class: one panel per class (10 or fewer), else per-class means; the
    dashed line is the training eps."""
    classes = np.unique(labels[labels >= 0])
    top = max(float(run.table.max()), run.train_epsilon, 1e-6)
    bins = np.linspace(0, top, 30)
    if len(classes) <= 10:
        figure, axes = plt.subplots(2, 5, figsize=(13, 5), sharex=True)
        for axis, label in zip(axes.flat, classes, strict=False):
            axis.hist(run.table[labels == label], bins=bins, color="tab:red", alpha=0.8)
            axis.axvline(run.train_epsilon, color="k", ls="--", lw=1)
            axis.set_title(f"class {label}", fontsize=9)
        for axis in axes[-1]:
            axis.set_xlabel("eps")
        for axis in axes[:, 0]:
            axis.set_ylabel("training examples")
    else:
        figure, axis = plt.subplots(figsize=(7, 4))
        means = [run.table[labels == label].mean() for label in classes]
        axis.hist(means, bins=30, color="tab:red")
        axis.axvline(run.train_epsilon, color="k", ls="--", lw=1)
        axis.set(xlabel="mean eps of a class", ylabel="classes")
    figure.suptitle(
        f"Final radius per class ({run.name}); dashed: the training eps {run.train_epsilon:.3g}"
    )
    figure.tight_layout()
    figure.savefig(out / "epsilon_histogram.png", dpi=120)
    plt.close(figure)
