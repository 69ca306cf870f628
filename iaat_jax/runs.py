"""Reads what training and evaluation left in a workdir: config.json, metrics.jsonl, eval.json
and epsilon_table.npy. The report and its figures read runs through this; nothing here trains."""

import dataclasses
import json

import numpy as np
from etils import epath


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
