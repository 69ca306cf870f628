"""Redraw the README's headline figure, pareto_autoattack.png, from the per-seed numbers
recorded in pareto_autoattack.json, with the report's own figure code (iaat_jax.analysis.figures):

    python docs/evaluation/redraw_pareto_autoattack.py
"""

import json
import sys
from pathlib import Path

from etils import epath

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from iaat_jax.analysis import figures  # noqa: E402
from iaat_jax.analysis.runs import Run  # noqa: E402


def recorded_runs() -> list[Run]:
    runs = []
    for entry in json.loads((HERE / "pareto_autoattack.json").read_text())["runs"]:
        config = {"method": entry["method"], "epsilon": entry["epsilon"], "seed": entry["seed"]}
        sweep = {
            "clean_accuracy": entry["clean"],
            "worst_case": [],
            "autoattack": [
                {"suite": "autoattack", "epsilon": 0.3, "robust_accuracy": entry["autoattack"]}
            ],
        }
        runs.append(Run(epath.Path(entry["name"]), config, [], sweep, None))
    return runs


if __name__ == "__main__":
    out = epath.Path(HERE / "redrawn")
    out.mkdir(exist_ok=True)
    for verdict in figures.plot_pareto(recorded_runs(), 0.3, out, print, "autoattack"):
        print(verdict)
    (out / "pareto.png").replace(HERE / "pareto_autoattack.png")
    out.rmdir()
    print(f"wrote {HERE / 'pareto_autoattack.png'}")
