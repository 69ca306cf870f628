"""The report's figures (paper Figs 2-5), drawn from loaded runs; see iaat_jax.report."""

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

from iaat_jax.runs import (  # noqa: E402
    Run,
    differing_settings,
    group_by_setting,
    measure_name,
    setting_of,
)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (robust, clean) points that no other point beats on both axes, by robustness."""
    return sorted(
        p for p in points if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)
    )


def frontier_gap(pgd_points: list[tuple[float, float]], robust: float, clean: float) -> float:
    """Clean accuracy above the fixed-radius frontier at the same robust accuracy.

    The frontier joins the non-dominated PGD runs' (robust, clean) points in order of
    robustness; beyond its ends it is flat at the nearest point (a point more robust than every
    PGD run is compared with the most robust one). Positive: beyond the frontier.
    """
    robust_values, clean_values = zip(*pareto_front(pgd_points), strict=True)
    return clean - float(np.interp(robust, robust_values, clean_values))


def _group_point(group: list[Run], test_epsilon: float, suite: str | None):
    """(mean robust, mean clean, sd robust, sd clean) over a setting's seeds that have both."""
    points = [(r.robust_accuracy(test_epsilon, suite), r.clean_accuracy()) for r in group]
    points = [p for p in points if None not in p]
    if not points:
        return None
    robust, clean = np.array(points).T
    spread = lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    return float(robust.mean()), float(clean.mean()), spread(robust), spread(clean)


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
    further, first_of_method, styles = itertools.cycle(FURTHER_COLOURS), {}, {}
    for group in groups:
        method = group[0].method
        marker, size, colour = METHOD_STYLES.get(method, ("o", 8, "k"))
        if group[0].frontier:
            colour = blues[pgd_radii.index(group[0].train_epsilon)]
        elif method in first_of_method:
            colour = next(further)
        setting = _setting_label(group[0], 1, first_of_method)
        label = setting if len(group) == 1 else f"{setting} ({len(group)} seeds)"
        style = Style(label, setting, colour, marker, size)
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
    """pareto.png and the numbers it draws (pareto.json: each setting's point, the frontier,
    the verdicts); returns a line per IAAT setting saying whether it is beyond the frontier.
    Draws nothing (and returns no verdicts) where no run has the accuracy to draw.

    A setting run with several seeds is drawn at its mean with one-standard-deviation bars,
    each seed as a small dot (a run that did not train included); the frontier joins the
    non-dominated fixed-radius means.
    """
    styles = styles or setting_styles(runs)
    drawn = []  # (group, point)
    for group in group_by_setting(runs):
        point = _group_point(group, test_epsilon, suite)
        missing = [
            r.name for r in group if r.sweep and r.robust_accuracy(test_epsilon, suite) is None
        ]
        if missing:
            warn(
                f"pareto.png: {', '.join(missing)} lack {measure_name(suite)} at eps "
                f"{test_epsilon:.4g}: left out"
            )
        if point is not None:
            drawn.append((group, point))
    if not drawn:
        return []
    figure, axis = plt.subplots(figsize=(6.5, 5))
    pgd, iaat, verdicts = [], [], []
    for group, point in drawn:
        style, seeds = style_of(group[0], styles), len(group)
        for run in group if seeds > 1 else ():
            clean, robust = run.clean_accuracy(), run.robust_accuracy(test_epsilon, suite)
            if clean is not None and robust is not None:
                axis.plot(robust, clean, ".", color=style.colour, alpha=0.4)
        axis.errorbar(
            point[0],
            point[1],
            xerr=point[2],
            yerr=point[3],
            fmt=style.marker,
            markersize=style.size,
            color=style.colour,
            label=style.label,
        )
        if group[0].frontier:
            pgd.append(point)
        elif group[0].adaptive:
            iaat.append((style.label, point))
    frontier = pareto_front([(p[0], p[1]) for p in pgd])
    if len(pgd) > 1:
        front = frontier
        if len(front) > 1:  # a single non-dominated setting is a point, not a line
            axis.plot(
                [p[0] for p in front],
                [p[1] for p in front],
                "-",
                color="tab:blue",
                alpha=0.6,
                label="PGD-AT frontier (non-dominated radii)",
            )
    if pgd:
        pgd_clean_sd = max(p[3] for p in pgd)
        for name, (robust, clean, robust_sd, clean_sd) in iaat:
            gap = frontier_gap([(p[0], p[1]) for p in pgd], robust, clean)
            where = "beyond" if gap > 0 else "not beyond"
            spread = f" (sd {clean_sd:.3f} / {robust_sd:.3f})" if robust_sd or clean_sd else ""
            noise = clean_sd + pgd_clean_sd  # seeds' spread of the two clean accuracies
            within = ", within the seeds' spread" if noise and abs(gap) <= noise else ""
            verdicts.append(
                f"{name}: clean {clean:.3f}, robust {robust:.3f}{spread} at eps "
                f"{test_epsilon:.4g} -> {where} the fixed-eps frontier ({gap:+.3f} clean "
                f"accuracy{within})"
            )
    elif iaat:
        warn("pareto.png: no evaluated PGD-AT run, so no frontier is drawn")
    numbers = {
        "test_epsilon": test_epsilon,
        "measure": measure_name(suite),
        "settings": [
            {
                "label": style_of(group[0], styles).label,
                "method": group[0].method,
                "runs": [run.name for run in group],
                **dict(zip(("robust", "clean", "robust_sd", "clean_sd"), point, strict=True)),
            }
            for group, point in drawn
        ],
        "frontier": [{"robust": robust, "clean": clean} for robust, clean in frontier],
        "verdicts": verdicts,
    }
    (out / "pareto.json").write_text(json.dumps(numbers, indent=2) + "\n")
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
    return verdicts


def _setting_label(run: Run, seeds: int, first_of_method: dict[str, Run]) -> str:
    """'IAAT eps 0.4', then what differs from the first setting of its method (e.g.
    'gamma=0.15'), then the seed count."""
    name = run.parts.label if run.parts else run.method
    what = f"{name} eps {run.train_epsilon:.3g}" if run.has_radius else name
    first = first_of_method.setdefault(run.method, run)
    variant = differing_settings(run, first, ignore=("epsilon",)) if first is not run else ""
    what += f", {variant}" if variant else ""
    return what if seeds == 1 else f"{what} ({seeds} seeds)"


def plot_robustness_curve(
    runs: list[Run], out: epath.Path, styles: dict[str, Style] | None = None
) -> bool:
    """robustness_curve.png: eval.json's worst case over the test radii, one line per setting
    (its seeds' mean, a band of one standard deviation); False, and nothing drawn, where no
    run has an eval.json."""
    styles = styles or setting_styles(runs)
    groups = [[r for r in g if r.sweep] for g in group_by_setting(runs)]
    groups = [g for g in groups if g]
    if not groups:
        return False
    figure, axis = plt.subplots(figsize=(8, 4.5))
    suites = sorted({a["suite"] for g in groups for r in g for a in r.sweep.get("autoattack", [])})
    for group in groups:
        style = style_of(group[0], styles)
        curves = [
            {round(r["epsilon"], 6): r["robust_accuracy"] for r in run.sweep["worst_case"]}
            for run in group
        ]
        radii = sorted(set.intersection(*(set(c) for c in curves)))
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
    its class and radius; a row says how many examples tie at its end."""
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
                f"class {labels[example_id]}\neps {run.table[example_id]:.3f}", fontsize=8
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
