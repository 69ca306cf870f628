"""Reads what training and evaluation left in a workdir: config.json, metrics.jsonl, eval.json
and epsilon_table.npy. The report and its figures read runs through this; nothing here trains."""

import dataclasses
import json

import numpy as np
from etils import epath

from iaat_jax.data.datasets import DATASETS
from iaat_jax.method import registry
from iaat_jax.run import files, workdir
from iaat_jax.run.workdir import RESUMABLE_FIELDS


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
    def parts(self) -> registry.Method | None:
        """The registered method the run trained with (None: a name this version lacks)."""
        return registry.METHODS.get(self.method)

    @property
    def adaptive(self) -> bool:
        """It kept a radius per example (IAAT's rule): the radius figures are about it."""
        return self.parts is not None and self.parts.adaptive

    @property
    def frontier(self) -> bool:
        """Its fixed radius is a point of the Pareto frontier (PGD-AT)."""
        return self.parts is not None and self.parts.frontier

    @property
    def has_radius(self) -> bool:
        """It trained at a radius (every method but clean training)."""
        return self.parts is None or self.parts.policy is not registry.NO_RADIUS

    @property
    def train_epsilon(self) -> float:
        return float(self.config.get("epsilon", float("nan")))

    def clean_accuracy(self) -> float | None:
        if self.sweep:
            return self.sweep["clean_accuracy"]
        return self.epoch_evals[-1]["clean_accuracy"] if self.epoch_evals else None

    def robust_accuracy(self, test_epsilon: float, suite: str | None = None) -> float | None:
        """From eval.json at test_epsilon: the worst case over every attack run there (suite
        None), or that suite's own accuracy. None where eval.json lacks it: never the
        per-epoch PGD-10 number, which would overstate robustness."""
        if suite is None:
            return _accuracy_at(self._rows("worst_case"), test_epsilon)
        rows = [r for r in self._rows("autoattack") if r["suite"] == suite]
        return _accuracy_at(rows, test_epsilon)

    def pgd_accuracy(self, test_epsilon: float, loss: str = "ce") -> float | None:
        """The sweep's PGD attack with `loss` alone at test_epsilon (eval.json), or None."""
        rows = [r for r in self._rows("attacks") if r["name"] == f"pgd-{loss}"]
        return _accuracy_at(rows, test_epsilon)

    def _rows(self, part: str) -> list[dict]:
        return (self.sweep or {}).get(part, [])

    @property
    def num_classes(self) -> int:
        spec = DATASETS.get(self.config.get("dataset"))
        return spec.num_classes if spec else 10


def _accuracy_at(rows: list[dict], epsilon: float) -> float | None:
    """The robust accuracy of the eval.json row at `epsilon` (to float rounding), or None."""
    return next((r["robust_accuracy"] for r in rows if np.isclose(r["epsilon"], epsilon)), None)


# config fields that differ between the seeds of one setting without changing the setting:
# the seed, and what a resumed run may change (where data lives, bookkeeping, evaluation)
_NOT_THE_SETTING = frozenset({"seed"}) | RESUMABLE_FIELDS


def setting_of(run: Run) -> str:
    """The run's setting: its config without the seed (seeds of one setting share it)."""
    config = {k: v for k, v in run.config.items() if k not in _NOT_THE_SETTING}
    return json.dumps(config, sort_keys=True)


def differing_settings(run: Run, reference: Run, ignore: tuple[str, ...] = ()) -> str:
    """The fields of `run`'s setting, except `ignore`, that differ from `reference`'s ('' if
    none), e.g. 'probe_steps=2': what tells two settings of one method and radius apart."""
    ours, theirs = json.loads(setting_of(run)), json.loads(setting_of(reference))
    changed = sorted(
        name
        for name in ours.keys() | theirs.keys()
        if ours.get(name) != theirs.get(name) and name not in ignore
    )
    return ", ".join(f"{name}={ours.get(name)}" for name in changed)


def table_agreement(table: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How close one radius table is to another: mean |difference| and Spearman's rank
    correlation (ties at their average rank)."""
    from scipy import stats

    correlation = stats.spearmanr(table, reference).statistic
    return {
        "mean_abs_difference": float(np.mean(np.abs(table - reference))),
        "rank_correlation": float(correlation),
    }


def group_by_setting(runs: list[Run]) -> list[list[Run]]:
    """Runs grouped by setting (the seeds of one experiment), in first-seen order."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(setting_of(run), []).append(run)
    return list(groups.values())


def setting_label(run: Run, groups: list[list[Run]]) -> str:
    """One name for `run`'s setting in every table and figure of a report: 'IAAT eps 0.3',
    then what differs from the first setting of its method in `groups` ('iaat_gamma=0.15')."""
    name = run.parts.label if run.parts else run.method
    label = f"{name} eps {run.train_epsilon:.4g}" if run.has_radius else name
    first = next(g[0] for g in groups if g[0].method == run.method)
    variant = differing_settings(run, first, ignore=("epsilon",)) if first is not run else ""
    return f"{label}, {variant}" if variant else label


def label_with_seeds(group: list[Run], groups: list[list[Run]]) -> str:
    """The setting's label and, for several seeds, their count: 'IAAT eps 0.3 (3 seeds)'."""
    label = setting_label(group[0], groups)
    return label if len(group) == 1 else f"{label} ({len(group)} seeds)"


def trained(run: Run) -> bool:
    """False for a run whose clean accuracy stayed near chance (under 2 / its class count)."""
    clean = run.clean_accuracy()
    return clean is None or clean >= 2.0 / run.num_classes


def measure_name(suite: str | None) -> str:
    """How a figure or table names the robust accuracy it shows."""
    if suite is None:
        return "worst case over every attack of eval.json"
    return f"{suite} (eval.json)"


def _json_lines(path: str) -> list[dict]:
    records = []
    for number, line in enumerate(files.read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as error:
            raise ReportError(
                f"{path} line {number} is damaged ({error.msg}): delete that line, or rerun the "
                "training command, which rewrites the file from its checkpoint"
            ) from error
    return records


def _json(path: str):
    try:
        return json.loads(files.read_text(path))
    except ValueError as error:
        raise ReportError(
            f"{path} is damaged ({error}): rerun the command that wrote it"
        ) from error


def load_run(directory: str) -> Run:
    """Read a run directory; ReportError if it is missing, holds no run, or a file is damaged."""
    path = epath.Path(directory)
    if not files.exists(directory):
        raise ReportError(f"run directory {directory} does not exist: pass a training --workdir")
    config_file = files.join(directory, "config.json")
    metrics_file = files.join(directory, "metrics.jsonl")
    if not files.exists(config_file) or not files.exists(metrics_file):
        raise ReportError(
            f"{directory} holds no training run (config.json and metrics.jsonl missing): "
            "pass the --workdir of a run made by python -m iaat_jax.main"
        )
    records = _json_lines(metrics_file)
    sweep_file = files.join(directory, "eval.json")
    table_file = files.join(directory, "epsilon_table.npy")
    table = None
    if files.exists(table_file):
        try:
            table = files.load_npy(table_file)
        except ValueError as error:
            raise ReportError(
                f"{error}: rerun the training command, which rewrites it from its checkpoint"
            ) from error
    config = workdir.with_current_names(_json(config_file))  # older runs' names too
    if table is not None and config.get("validation_examples"):  # the trained ids only
        table = table[: len(table) - config["validation_examples"]]
    return Run(
        path=path,
        config=config,
        epoch_evals=[r for r in records if "robust_accuracy" in r],
        sweep=_json(sweep_file) if files.exists(sweep_file) else None,
        table=table,
    )
