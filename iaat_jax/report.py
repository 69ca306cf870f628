"""Figures and a summary of training runs: python -m iaat_jax.report RUN_DIR [...] --out OUT.

Writes into OUT: pareto.png (clean vs robust accuracy, fixed-radius PGD runs drawn as the
frontier, IAAT runs marked; paper Fig 3), robustness_curve.png (robust accuracy over test radii,
Fig 4), epsilon_over_epochs.png (mean and tracked radii per epoch, Fig 5), epsilon_samples.png
(training images with the smallest and largest radii, Fig 2), epsilon_histogram.png (final
radii per class) and report.md. A run that lacks what a figure needs is named in a warning.
"""

import argparse
import dataclasses
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from etils import epath  # noqa: E402


class ReportError(ValueError):
    """A run directory that cannot be reported on; the message says why and what to pass."""


@dataclasses.dataclass
class Run:
    """Everything a training run left in its workdir."""

    path: epath.Path
    config: dict
    epoch_evals: list[dict]  # metrics.jsonl records with robust_accuracy, in step order
    sweep: dict | None  # eval.json
    table: np.ndarray | None  # epsilon_table.npy

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def method(self) -> str:
        return self.config.get("method", "?")

    @property
    def train_epsilon(self) -> float:
        return float(self.config.get("epsilon", float("nan")))

    def clean_accuracy(self) -> float | None:
        if self.sweep:
            return self.sweep["clean_accuracy"]
        return self.epoch_evals[-1]["clean_accuracy"] if self.epoch_evals else None

    def robust_accuracy(self, test_epsilon: float) -> float | None:
        """Worst case of the sweep at test_epsilon, else the last epoch's eval if it matches."""
        for row in (self.sweep or {}).get("worst_case", []):
            if np.isclose(row["epsilon"], test_epsilon):
                return row["robust_accuracy"]
        if self.epoch_evals and np.isclose(self.train_epsilon, test_epsilon):
            return self.epoch_evals[-1]["robust_accuracy"]
        return None


def load_run(directory: str) -> Run:
    """Read a run directory; ReportError if it is missing or holds no training output."""
    path = epath.Path(directory)
    if not path.is_dir():
        raise ReportError(f"run directory {directory} does not exist: pass a training --workdir")
    config_file, metrics_file = path / "config.json", path / "metrics.jsonl"
    if not config_file.exists() or not metrics_file.exists():
        raise ReportError(
            f"{directory} holds no training run (config.json and metrics.jsonl missing): "
            "pass the --workdir of a run made by python -m iaat_jax.main"
        )
    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if line]
    sweep_file, table_file = path / "eval.json", path / "epsilon_table.npy"
    return Run(
        path=path,
        config=json.loads(config_file.read_text()),
        epoch_evals=[r for r in records if "robust_accuracy" in r],
        sweep=json.loads(sweep_file.read_text()) if sweep_file.exists() else None,
        table=np.load(table_file) if table_file.exists() else None,
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


def plot_pareto(runs: list[Run], test_epsilon: float, out: epath.Path, warn) -> list[str]:
    """pareto.png; returns a line per IAAT run saying whether it is beyond the frontier."""
    figure, axis = plt.subplots(figsize=(6, 5))
    pgd, verdicts = [], []
    for run in runs:
        clean, robust = run.clean_accuracy(), run.robust_accuracy(test_epsilon)
        if clean is None or robust is None:
            warn(f"pareto.png: {run.name} has no robust accuracy at eps {test_epsilon:.4g}")
            continue
        if run.method == "pgd":
            pgd.append((robust, clean, run.train_epsilon))
        else:
            style = {"iaat": ("*", 14, "tab:red"), "clean": ("s", 8, "tab:gray")}
            marker, size, color = style.get(run.method, ("o", 8, "k"))
            axis.plot(
                robust,
                clean,
                marker,
                markersize=size,
                color=color,
                linestyle="none",
                label=f"{run.method.upper()} {run.name}",
            )
    if pgd:
        front = pareto_front([(p[0], p[1]) for p in pgd])
        axis.plot(
            [p[0] for p in pgd],
            [p[1] for p in pgd],
            "o",
            color="tab:blue",
            label="PGD-AT at a fixed eps",
        )
        axis.plot(
            [p[0] for p in front],
            [p[1] for p in front],
            "-",
            color="tab:blue",
            label="fixed-eps frontier (non-dominated runs)",
        )
        for robust, clean, eps in pgd:
            axis.annotate(
                f"eps {eps:.3g}",
                (robust, clean),
                textcoords="offset points",
                xytext=(5, -12),
                fontsize=8,
            )
        for run in runs:
            clean, robust = run.clean_accuracy(), run.robust_accuracy(test_epsilon)
            if run.method == "iaat" and clean is not None and robust is not None:
                gap = frontier_gap([(p[0], p[1]) for p in pgd], robust, clean)
                where = "beyond" if gap > 0 else "not beyond"
                verdicts.append(
                    f"{run.name}: clean {clean:.3f}, robust {robust:.3f} at eps {test_epsilon:.4g}"
                    f" -> {where} the fixed-eps frontier ({gap:+.3f} clean accuracy)"
                )
    else:
        warn("pareto.png: no PGD run, so no frontier is drawn")
    axis.set(
        xlabel=f"robust accuracy (eps {test_epsilon:.4g})",
        ylabel="clean accuracy",
        title="Clean vs robust accuracy",
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(out / "pareto.png", dpi=120)
    plt.close(figure)
    return verdicts


def plot_robustness_curve(runs: list[Run], out: epath.Path, warn) -> None:
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for run in runs:
        if not run.sweep:
            warn(f"robustness_curve.png: {run.name} has no eval.json (run --mode=evaluate)")
            continue
        rows = run.sweep["worst_case"]
        axis.plot(
            [r["epsilon"] for r in rows],
            [r["robust_accuracy"] for r in rows],
            "o-",
            label=f"{run.method} eps {run.train_epsilon:.3g} ({run.name})",
        )
    axis.set(
        xlabel="test eps (L-inf)",
        ylabel="robust accuracy (worst case of attacks)",
        title="Robustness over test radii",
        ylim=(0, 1),
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
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


def _first_iaat_with_table(runs: list[Run], figure_name: str, warn) -> Run | None:
    for run in runs:
        if run.method == "iaat" and run.table is not None:
            return run
    warn(f"{figure_name}: no IAAT run with an epsilon_table.npy")
    return None


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


def write_markdown(runs, test_epsilons, test_epsilon, verdicts, warnings, out) -> None:
    header = ["run", "method", "train eps", "clean"] + [f"robust @ {e:.4g}" for e in test_epsilons]
    lines = ["# IAAT report", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for run in runs:
        train_eps = "-" if run.method == "clean" else f"{run.train_epsilon:.4g}"
        cells = [run.name, run.method, train_eps]
        cells.append(_fmt(run.clean_accuracy()))
        cells += [_fmt(run.robust_accuracy(e)) for e in test_epsilons]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Robust accuracy is the per-example worst case over the attacks of each run's",
        "eval.json (settings there); without one, the last epoch's PGD evaluation at the",
        "run's own eps.",
        "",
        f"## Beyond the frontier? (test eps {test_epsilon:.4g})",
        "",
    ]
    lines += [f"- {v}" for v in verdicts] or ["- no IAAT and PGD runs to compare"]
    lines += [""] + [
        f"![{name}]({name}.png)"
        for name in (
            "pareto",
            "robustness_curve",
            "epsilon_over_epochs",
            "epsilon_samples",
            "epsilon_histogram",
        )
    ]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def make_report(run_dirs: list[str], out_dir: str, test_epsilon: float | None = None) -> list[str]:
    """Write every figure and report.md for `run_dirs` into `out_dir`; return the warnings."""
    runs = [load_run(d) for d in run_dirs]
    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []
    warn = warnings.append
    if test_epsilon is None:  # the radius the IAAT runs (else the first run) trained at
        test_epsilon = next(
            (r.train_epsilon for r in runs if r.method == "iaat"), runs[0].train_epsilon
        )
    test_epsilons = sorted(
        {round(row["epsilon"], 6) for r in runs if r.sweep for row in r.sweep["worst_case"]}
        | {round(test_epsilon, 6)}
    )
    verdicts = plot_pareto(runs, test_epsilon, out, warn)
    plot_robustness_curve(runs, out, warn)
    plot_epsilon_over_epochs(runs, out, warn)
    run = _first_iaat_with_table(runs, "epsilon_samples.png / epsilon_histogram.png", warn)
    if run is not None:
        from iaat_jax import input_pipeline  # TensorFlow only where real data is read

        order = np.argsort(run.table, kind="stable")
        labels, images = input_pipeline.training_examples(
            ml_collections.ConfigDict(run.config), np.concatenate([order[:8], order[-8:]])
        )
        plot_epsilon_samples(run, images, out)
        plot_epsilon_histogram(run, labels, out)
    write_markdown(runs, test_epsilons, test_epsilon, verdicts, warnings, out)
    return warnings


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
    args = parser.parse_args(argv)
    try:
        warnings = make_report(args.runs, args.out, args.test_epsilon)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {args.out}/report.md and its figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
