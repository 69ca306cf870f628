"""<workdir>/MODEL_CARD.md: what a trained run is, how it was trained, how robust it measured.

Written by `--mode=evaluate` beside eval.json, from the run's config, the evaluation's results,
the exported epsilon table and metrics.jsonl (for the training time).
"""

import json

import ml_collections
import numpy as np

from iaat_jax.data.datasets import DATASETS
from iaat_jax.method import registry
from iaat_jax.run import files


def training_seconds(metrics_lines: list[str]) -> float:
    """Wall time of training from metrics.jsonl: each log interval's steps at its rate, plus
    the per-epoch evaluations (startup before the first step is not counted)."""
    seconds, previous = 0.0, 0
    for line in metrics_lines:
        record = json.loads(line)
        if record.get("steps_per_second"):
            seconds += (record["step"] - previous) / record["steps_per_second"]
            previous = record["step"]
        seconds += record.get("eval_seconds", 0.0)
    return seconds


def model_card(
    config: ml_collections.ConfigDict, results: dict, table: np.ndarray, seconds: float
) -> str:
    """The card's markdown."""
    spec, method = DATASETS[config.dataset], registry.method_of(config)
    held_out = config.get("validation_examples", 0)  # the training split's tail, not trained
    table = table[: len(table) - held_out]
    evaluated = results.get("split", spec.eval_split)
    entry = results.get("robustbench")
    suite_rows = results.get("autoattack", [])
    lines = [
        f"# Model card: {config.model} on {config.dataset}, {config.method}",
        "",
        "## Model and data",
        f"- Architecture: `{config.model}`, {entry['parameters']:,} parameters"
        if entry
        else f"- Architecture: `{config.model}`",
        f"- Data: `{spec.tfds_name}` (TFDS), trained on the `{spec.train_split}` split "
        f"({len(table):,} examples{f', the last {held_out:,} held out' if held_out else ''}), "
        f"tested on `{evaluated}` "
        f"({results['num_examples']:,} examples); images {list(spec.image_shape)} in [0, 1]",
        f"- Checkpoint: step {results['checkpoint_step']}",
        "",
        "## Training",
        f"- Method: {method.label} ({method.source}); radius: {method.policy.description}; "
        f"attack: {method.objective.description}; loss: {method.loss.description}",
        f"- Radius eps {config.epsilon:.4f} (L-inf), PGD-{config.attack_steps} in training",
    ]
    if method.adaptive:
        lines.append(
            f"- IAAT: gamma {config.iaat_gamma}, beta {config.iaat_beta}, "
            f"warm-up {config.iaat_warmup_epochs} epochs, "
            f"eps_max {config.epsilon_max or 'none (no cap)'}"
        )
    if method.loss.parameter:
        lines.append(f"- {method.loss.parameter} {config[method.loss.parameter]}")
    lines += [
        f"- Budget: {config.num_epochs} epochs at batch {config.batch_size}, optimizer "
        f"`{config.optimizer}`, learning rate {config.learning_rate} "
        f"({config.lr_schedule}), seed {config.seed}",
        f"- Training time: {seconds / 60:.1f} min (from metrics.jsonl)",
        "",
        "## Robustness (measured by `--mode=evaluate`, eval.json)",
        f"- Clean accuracy: {results['clean_accuracy']:.4f}",
    ]
    for run in suite_rows:
        budget = ", ".join(
            f"{a['name']} {a.get('iterations', a.get('queries'))}"
            + (f" x {a['targets']} targets" if "targets" in a else "")
            for a in run["attacks"]
        )
        lines.append(
            f"- Robust accuracy under suite `{run['suite']}` at eps {run['epsilon']:.4f}: "
            f"{run['robust_accuracy']:.4f} ({budget})"
        )
    for row in results.get("worst_case", []):
        lines.append(
            f"- Worst case of every attack run at eps {row['epsilon']:.4f}: "
            f"{row['robust_accuracy']:.4f}"
        )
    quantiles = np.percentile(table, [10, 50, 90])
    lines += [
        "",
        "## Radii of the epsilon table (epsilon_table.npy, index = example id)",
        f"- Mean {table.mean():.4f}, max {table.max():.4f}, p10 / p50 / p90 "
        f"{quantiles[0]:.4f} / {quantiles[1]:.4f} / {quantiles[2]:.4f}",
        "",
        "## Known limits",
        f"- Robustness is empirical: attacks at the radii above on {results['num_examples']:,} "
        f"examples of `{evaluated}`, not a certificate; other threat models (L2, corruptions, "
        "patches) are not measured unless listed here.",
        "- A suite other than `autoattack` (the standard version) is weaker than what RobustBench "
        "reports; compare numbers only under the same suite.",
    ]
    if method.adaptive:
        lines.append(
            "- IAAT trades robustness at the largest radii for clean accuracy: its robust "
            "accuracy at the training eps is expected below that of PGD training at that eps."
        )
    return "\n".join(lines) + "\n"


def write_model_card(config: ml_collections.ConfigDict, workdir: str, results: dict) -> str:
    """Write <workdir>/MODEL_CARD.md; return its path."""
    table = files.load_npy(files.join(workdir, "epsilon_table.npy"))
    metrics = files.join(workdir, "metrics.jsonl")
    lines = files.read_text(metrics).splitlines() if files.exists(metrics) else []
    path = files.join(workdir, "MODEL_CARD.md")
    files.write_text(path, model_card(config, results, table, training_seconds(lines)))
    return path
