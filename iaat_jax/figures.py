"""The report's figures (paper Figs 2-5), drawn from loaded runs; see iaat_jax.report."""

import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from etils import epath  # noqa: E402

from iaat_jax.runs import Run, differing_settings, group_by_setting, measure_name  # noqa: E402


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


def plot_pareto(
    runs: list[Run], test_epsilon: float, out: epath.Path, warn, suite: str | None = None
) -> list[str]:
    """pareto.png; returns a line per IAAT setting saying whether it is beyond the frontier.

    A setting run with several seeds is drawn at its mean with one-standard-deviation bars,
    each seed as a small dot (a run that did not train included); the frontier joins the
    non-dominated fixed-radius means.
    """
    figure, axis = plt.subplots(figsize=(6, 5))
    pgd, iaat, verdicts = [], [], []
    style = {
        "iaat": ("*", 14, "tab:red"),
        "clean": ("s", 8, "tab:gray"),
        "pgd": ("o", 7, "tab:blue"),
        "trades": ("D", 8, "tab:green"),
    }
    first_of_method: dict[str, Run] = {}
    further_colors = itertools.cycle(
        ("tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "k")
    )
    drawn_methods = set()
    for group in group_by_setting(runs):
        point = _group_point(group, test_epsilon, suite)
        missing = [r.name for r in group if r.robust_accuracy(test_epsilon, suite) is None]
        if missing:
            warn(
                f"pareto.png: {', '.join(missing)} lack {measure_name(suite)} at eps "
                f"{test_epsilon:.4g}: left out"
            )
        if point is None:
            continue
        method, seeds = group[0].method, len(group)
        marker, size, color = style.get(method, ("o", 8, "k"))
        if method != "pgd" and method in drawn_methods:  # a further setting: its own colour
            color = next(further_colors)
        drawn_methods.add(method)
        name = group[0].name if seeds == 1 else f"{group[0].name} ({seeds} seeds)"
        for run in group if seeds > 1 else ():
            clean, robust = run.clean_accuracy(), run.robust_accuracy(test_epsilon, suite)
            if clean is not None and robust is not None:
                axis.plot(robust, clean, ".", color=color, alpha=0.4)
        axis.errorbar(
            point[0],
            point[1],
            xerr=point[2],
            yerr=point[3],
            fmt=marker,
            markersize=size,
            color=color,
            label=None if method == "pgd" else _setting_label(group[0], seeds, first_of_method),
        )
        if method == "pgd":
            pgd.append(point)
            axis.annotate(
                f"eps {group[0].train_epsilon:.3g}",
                (point[0], point[1]),
                textcoords="offset points",
                xytext=(5, -12),
                fontsize=8,
            )
        elif method == "iaat":
            iaat.append((name, point))
    if pgd:
        front = pareto_front([(p[0], p[1]) for p in pgd])
        axis.plot([], [], "o", color="tab:blue", label="PGD-AT at a fixed eps")
        if len(front) > 1:  # one setting is a point, not a line: no legend entry for it
            axis.plot(
                [p[0] for p in front],
                [p[1] for p in front],
                "-",
                color="tab:blue",
                label="fixed-eps frontier (non-dominated runs)",
            )
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
    else:
        warn("pareto.png: no PGD run, so no frontier is drawn")
    axis.set(
        xlabel=f"robust accuracy at eps {test_epsilon:.4g}: {measure_name(suite)}",
        ylabel="clean accuracy",
        title="Clean vs robust accuracy",
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(out / "pareto.png", dpi=120)
    plt.close(figure)
    return verdicts


def _setting_label(run: Run, seeds: int, first_of_method: dict[str, Run]) -> str:
    """'IAAT eps 0.4', then what differs from the first setting of its method drawn (e.g.
    'gamma=0.15'), then the seed count."""
    what = (
        "clean training"
        if run.method == "clean"
        else f"{run.method.upper()} eps {run.train_epsilon:.3g}"
    )
    first = first_of_method.setdefault(run.method, run)
    variant = differing_settings(run, first, ignore=("epsilon",)) if first is not run else ""
    what += f", {variant}" if variant else ""
    return what if seeds == 1 else f"{what} ({seeds} seeds)"


def plot_robustness_curve(runs: list[Run], out: epath.Path, warn) -> None:
    """robustness_curve.png: eval.json's worst case over the test radii, one line per setting
    (its seeds' mean, a band of one standard deviation), a colour per setting."""
    groups, first_of_method = [], {}
    for group in group_by_setting(runs):
        for run in group:
            if not run.sweep:
                warn(f"robustness_curve.png: {run.name} has no eval.json (run --mode=evaluate)")
        group = [run for run in group if run.sweep]
        if group:
            groups.append(group)
    figure, axis = plt.subplots(figsize=(8, 4.5))
    colours = plt.cm.tab10(np.arange(len(groups)) % 10)
    suites = sorted({a["suite"] for g in groups for r in g for a in r.sweep.get("autoattack", [])})
    for group, colour in zip(groups, colours, strict=True):
        curves = [
            {round(r["epsilon"], 6): r["robust_accuracy"] for r in run.sweep["worst_case"]}
            for run in group
        ]
        radii = sorted(set.intersection(*(set(c) for c in curves)))
        values = np.array([[c[e] for e in radii] for c in curves])
        mean = values.mean(axis=0)
        label = _setting_label(group[0], len(group), first_of_method)
        axis.plot(radii, mean, "o-", color=colour, label=label)
        if len(group) > 1:
            spread = values.std(axis=0, ddof=1)
            axis.fill_between(radii, mean - spread, mean + spread, color=colour, alpha=0.2)
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


def plot_epsilon_over_epochs(runs: list[Run], out: epath.Path, warn) -> None:
    figure, (mean_axis, tracked_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    iaat = [run for run in runs if run.method == "iaat" and run.epoch_evals]
    if not iaat:
        warn("epsilon_over_epochs.png: no IAAT run with per-epoch records")
    for run in iaat:
        epochs = [r["epoch"] + 1 for r in run.epoch_evals]
        line = mean_axis.plot(
            epochs, [r["epsilon_mean"] for r in run.epoch_evals], "o-", label=f"{run.name} mean"
        )[0]
        if "epsilon_p10" in run.epoch_evals[0]:
            mean_axis.fill_between(
                epochs,
                [r["epsilon_p10"] for r in run.epoch_evals],
                [r["epsilon_p90"] for r in run.epoch_evals],
                color=line.get_color(),
                alpha=0.2,
                label=f"{run.name} p10-p90",
            )
    if iaat:
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
                label=f"id {key.rsplit('_', 1)[1]}",
            )
        tracked_axis.set_title(f"radius of tracked training examples ({run.name})")
        tracked_axis.legend(fontsize=7, ncol=2)
    mean_axis.set(xlabel="epoch", ylabel="eps", title="mean radius over the training set")
    tracked_axis.set(xlabel="epoch", ylabel="eps")
    for axis in (mean_axis, tracked_axis):
        axis.grid(alpha=0.3)
    if iaat:
        mean_axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "epsilon_over_epochs.png", dpi=120)
    plt.close(figure)


def plot_epsilon_samples(run: Run, images: dict, out: epath.Path, count: int = 8) -> None:
    """Training images with the `count` smallest and largest radii (Fig 2)."""
    order = np.argsort(run.table, kind="stable")
    rows = {"smallest eps": order[:count], "largest eps": order[::-1][:count]}
    figure, axes = plt.subplots(2, count, figsize=(1.4 * count, 3.6))
    for row, (title, ids) in enumerate(rows.items()):
        for column, example_id in enumerate(ids):
            axis = axes[row, column]
            image = images[int(example_id)]
            axis.imshow(
                image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=1
            )
            axis.set_title(f"{run.table[example_id]:.3f}", fontsize=8)
            axis.axis("off")
        axes[row, 0].text(
            -0.3,
            0.5,
            title,
            transform=axes[row, 0].transAxes,
            rotation=90,
            va="center",
            ha="right",
            fontsize=9,
        )
    figure.suptitle(f"Training examples by assigned radius ({run.name})")
    figure.tight_layout()
    figure.savefig(out / "epsilon_samples.png", dpi=120)
    plt.close(figure)


def plot_epsilon_histogram(run: Run, labels: np.ndarray, out: epath.Path) -> None:
    """Final radii per class: one panel per class (10 or fewer), else per-class means."""
    classes = np.unique(labels[labels >= 0])
    bins = np.linspace(0, max(float(run.table.max()), 1e-6), 30)
    if len(classes) <= 10:
        figure, axes = plt.subplots(2, 5, figsize=(13, 5), sharex=True)
        for axis, label in zip(axes.flat, classes, strict=False):
            axis.hist(run.table[labels == label], bins=bins, color="tab:red", alpha=0.8)
            axis.set_title(f"class {label}", fontsize=9)
        for axis in axes[-1]:
            axis.set_xlabel("eps")
    else:
        figure, axis = plt.subplots(figsize=(7, 4))
        means = [run.table[labels == label].mean() for label in classes]
        axis.hist(means, bins=30, color="tab:red")
        axis.set(xlabel="mean eps of a class", ylabel="classes")
    figure.suptitle(f"Final radius distribution per class ({run.name})")
    figure.tight_layout()
    figure.savefig(out / "epsilon_histogram.png", dpi=120)
    plt.close(figure)
