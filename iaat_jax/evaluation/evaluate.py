"""Robust evaluation: a PGD sweep over test radii (the robustness curve) and an attack suite,
AutoAttack by default, at the radii that matter (the headline).

An example counts as robust at a radius only if it is classified correctly clean and no attack
run at that radius (every loss, restart, target, iterate and query) found a misclassified point
in its ball: that per-example worst case is the headline number. `evaluate_run` restores a
run's checkpoint and writes `<workdir>/eval.json` (with a RobustBench-style entry and the
suite's sanity checks), MODEL_CARD.md and TensorBoard scalars.
"""

import dataclasses
import json
import os
import time
from collections.abc import Iterable

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from iaat_jax import errors
from iaat_jax.attacks import autoattack, pgd, sanity
from iaat_jax.evaluation import model_card
from iaat_jax.method import step as step_lib
from iaat_jax.run import config_checks, experiment, files, metrics_log, sharding
from iaat_jax.run import workdir as workdir_lib
from iaat_jax.run.checkpoint import Checkpointer


@dataclasses.dataclass(frozen=True)
class Attack:
    """One L-inf PGD attack of the sweep."""

    loss: str  # 'ce', 'margin' or 'dlr'
    epsilon: float
    steps: int
    step_size: float
    restarts: int = 1  # random restarts; an example must survive all

    @property
    def name(self) -> str:
        return f"pgd-{self.loss}"

    @classmethod
    def with_training_step_size(
        cls, loss: str, epsilon: float, steps: int, step_min: float, restarts: int = 1
    ) -> "Attack":
        """PGD whose step size follows the training rule, max(eps / (steps / 2), step_min)."""
        size = float(pgd.pgd_step_size(np.float32(epsilon), steps, step_min))
        return cls(loss, float(epsilon), steps, size, restarts)


def per_epoch_attack(config: ml_collections.ConfigDict) -> Attack:
    """The robust evaluation after each training epoch: PGD-k with cross-entropy at epsilon."""
    return Attack.with_training_step_size(
        "ce", config.epsilon, config.eval_attack_steps, config.attack_step_min
    )


def sweep_attacks(config: ml_collections.ConfigDict) -> list[Attack]:
    """The attacks of `--mode=evaluate`: every radius of the sweep times every loss."""
    epsilons = config.sweep_epsilons or tuple(np.linspace(0.0, 2 * config.epsilon, 9))
    steps = config.sweep_attack_steps
    attack_list = []
    for eps in epsilons:
        for loss in config.sweep_losses:
            attack = Attack.with_training_step_size(
                loss, eps, steps, config.attack_step_min, config.sweep_restarts
            )
            if config.sweep_step_size:
                attack = dataclasses.replace(attack, step_size=config.sweep_step_size)
            attack_list.append(attack)
    return attack_list


def suite_epsilons(config: ml_collections.ConfigDict) -> tuple[float, ...]:
    """The radii at which `config.eval_suite` runs (none without a suite)."""
    if not config.eval_suite:
        return ()
    return tuple(float(e) for e in config.eval_suite_epsilons or (config.epsilon,))


def _global_sum(values: np.ndarray) -> np.ndarray:
    """Sum over hosts of per-host partial sums."""
    return sharding.every_host(values).sum(axis=0).reshape(np.shape(values))


def measure(
    state,
    model,
    mesh,
    batches: Iterable[dict],
    attack_list: list[Attack],
    key,
    num_batches=None,
    unroll: bool = False,
) -> dict:
    """Clean accuracy, each attack's robust accuracy and the per-radius worst case.

    `batches` are padded eval batches with a mask; each batch is attacked by every attack
    before the next is read, so the data is read once. `unroll`: unrolled PGD loops. The
    result's "flags" hold this host's per-example verdicts (real rows, in batch order): clean
    [n] and, per radius, robust [n].
    """
    eval_steps = {
        (a.loss, a.steps): step_lib.make_eval_step(model, mesh, a.loss, a.steps, unroll)
        for a in attack_list
    }
    totals = np.zeros(2 + len(attack_list))  # examples, clean-correct, robust per attack
    epsilons = sorted({a.epsilon for a in attack_list})
    clean_flags, robust_flags = [], {eps: [] for eps in epsilons}
    started = time.perf_counter()
    for index, batch in enumerate(batches):
        mask = batch["mask"]
        device_batch = sharding.device_batch(batch, mesh)
        clean, survived = None, {eps: mask.copy() for eps in epsilons}
        # radius-0 attacks last: they cannot move the input, so they reuse the clean flags
        for number, attack in sorted(enumerate(attack_list), key=lambda x: x[1].epsilon == 0):
            if attack.epsilon == 0 and clean is not None:
                totals[2 + number] += np.sum(clean * mask)
                survived[0.0] = survived[0.0] * clean
                continue
            robust = np.ones_like(mask)
            radius = np.full(mask.shape, attack.epsilon, np.float32)
            size = np.full(mask.shape, attack.step_size, np.float32)
            radius, size = sharding.shard_rows(radius, mesh), sharding.shard_rows(size, mesh)
            eval_step = eval_steps[(attack.loss, attack.steps)]
            for restart in range(attack.restarts):
                restart_key = jax.random.fold_in(jax.random.fold_in(key, number), restart)
                restart_key = sharding.replicate(restart_key, mesh)
                flags = eval_step(state, device_batch, radius, size, restart_key)
                clean = sharding.local_rows(flags["clean"])
                robust = robust * sharding.local_rows(flags["robust"])
            totals[2 + number] += np.sum(robust * mask)
            survived[attack.epsilon] = survived[attack.epsilon] * robust
        totals[0] += mask.sum()
        totals[1] += np.sum(clean * mask)
        real = mask > 0
        clean_flags.append(clean[real] > 0)
        for eps in epsilons:
            robust_flags[eps].append(survived[eps][real] > 0)
        if num_batches:
            elapsed = time.perf_counter() - started
            logging.info(
                "evaluate: batch %d/%d, %d attacks each | ETA %s",
                index + 1,
                num_batches,
                len(attack_list),
                metrics_log.format_seconds(elapsed / (index + 1) * (num_batches - index - 1)),
            )
    totals = [float(v) for v in _global_sum(totals)]
    count = totals[0]
    flags = {
        "clean": np.concatenate(clean_flags),
        "robust": {eps: np.concatenate(rows) for eps, rows in robust_flags.items()},
    }
    return {
        "num_examples": int(count),
        "clean_accuracy": totals[1] / count,
        "attacks": [
            dict(dataclasses.asdict(a), name=a.name, robust_accuracy=totals[2 + i] / count)
            for i, a in enumerate(attack_list)
        ],
        "worst_case": [
            {
                "epsilon": eps,
                "robust_accuracy": float(_global_sum(flags["robust"][eps].sum())) / count,
                "attacks": sorted({a.name for a in attack_list if a.epsilon == eps}),
                "restarts": max(a.restarts for a in attack_list if a.epsilon == eps),
            }
            for eps in epsilons
        ],
        "flags": flags,
    }


def corruption_accuracy(config: ml_collections.ConfigDict, state, model, mesh, key) -> dict:
    """Clean accuracy on each TFDS cifar10_corrupted set (19 corruptions x severities 1-5)."""
    from iaat_jax.data import input_pipeline
    from iaat_jax.data.datasets import CIFAR10_CORRUPTIONS

    no_attack = [Attack("ce", 0.0, 1, 0.0)]
    accuracy = {}
    names = [f"{c}_{severity}" for c in CIFAR10_CORRUPTIONS for severity in range(1, 6)]
    started = time.perf_counter()
    for done, name in enumerate(names, start=1):
        _, batches = input_pipeline.corrupted_eval_batches(
            config, name, jax.process_index(), jax.process_count()
        )
        accuracy[name] = measure(state, model, mesh, batches, no_attack, key)["clean_accuracy"]
        eta = (time.perf_counter() - started) / done * (len(names) - done)
        logging.info(
            "corruption %s: accuracy %.4f (%d/%d, ETA %s)",
            name,
            accuracy[name],
            done,
            len(names),
            metrics_log.format_seconds(eta),
        )
    return {"mean_accuracy": float(np.mean(list(accuracy.values()))), "accuracy": accuracy}


def restore_checkpoint(workdir: epath.Path, state_template, num_train: int, step=None):
    """(restored state, its step) from checkpoint `step` (None: the newest readable one);
    ConfigError if there is none, or no such step."""
    checkpoints = Checkpointer(workdir, max_to_keep=None)
    try:
        state = checkpoints.restore(state_template, num_train, step)[0]
    finally:
        checkpoints.close()
    return state, int(state.step)


def suite_results(
    config, state, model, mesh, batches: list[dict], sweep: dict, key, num_classes: int
) -> dict:
    """The suite at each of its radii, from the sweep's clean flags, its sanity checks, and
    the sweep's worst case (a new list; `sweep` is left as it is) whose rows at those radii
    also take the suite's verdicts."""
    suite = autoattack.SUITES[config.eval_suite]
    examples = autoattack.Examples.from_batches(batches)
    local_batch = config.eval_batch_size // jax.process_count()
    classify, variables = autoattack.flax_classifier(model), state.variables
    checks = sanity.model_checks(classify, variables, mesh, batches[0], batches[0]["mask"])
    runs, flags, count = [], sweep["flags"], sweep["num_examples"]
    worst_case = [dict(row) for row in sweep["worst_case"]]
    for number, eps in enumerate(suite_epsilons(config)):
        eps_key = jax.random.fold_in(key, pgd.Stream.SUITE_RADIUS + number)
        outcome = autoattack.run_suite(
            classify,
            variables,
            mesh,
            examples,
            flags["clean"],
            suite,
            eps,
            eps_key,
            local_batch,
            num_classes,
        )
        robust, rows = outcome.robust, outcome.attacks
        checks["unconfirmed_breaks"] = checks.get("unconfirmed_breaks", 0) + outcome.unconfirmed
        runs.append(
            {
                "suite": config.eval_suite,
                "epsilon": eps,
                "robust_accuracy": rows[-1]["robust_accuracy"],
                "attacks": rows,
            }
        )
        worst = robust & flags["robust"].get(eps, np.ones_like(robust))
        row = next((r for r in worst_case if r["epsilon"] == eps), None)
        if row is None:
            row = {"epsilon": eps, "attacks": [], "restarts": 1}
            worst_case = sorted(worst_case + [row], key=lambda r: r["epsilon"])
        row["pgd_robust_accuracy"] = row.get("robust_accuracy")  # the sweep's alone
        row["robust_accuracy"] = float(_global_sum(worst.sum())) / count
        row["attacks"] = sorted(set(row["attacks"]) | {a.name for a in suite})
        if eps == suite_epsilons(config)[0] and suite[-1].name == "square":
            checks.update(sanity.square_check(rows[-1]["broken"], count))
    return {"autoattack": runs, "checks": checks, "worst_case": worst_case}


def robustbench_entry(config, results: dict, num_params: int, split: str) -> dict:
    """The headline in RobustBench's terms: the suite's accuracy at the first suite radius, on
    the evaluated `split` (the test split, or a held-out tail of the training split)."""
    run = results["autoattack"][0]
    return {
        "dataset": config.dataset,
        "split": split,
        "threat_model": "Linf",
        "eps": run["epsilon"],
        "architecture": config.model,
        "parameters": num_params,
        "n_examples": results["num_examples"],
        "clean_acc": results["clean_accuracy"],
        "autoattack_acc": run["robust_accuracy"],
        "suite": run["suite"],
        "robust_acc_after": {a["name"]: a["robust_accuracy"] for a in run["attacks"]},
    }


def evaluate_run(config: ml_collections.ConfigDict, workdir: str, step=None) -> dict:
    """Restore checkpoint `step` (None: the newest) of the run in `workdir`, run the PGD sweep
    and the suite, write eval.json; return it."""
    config_checks.validate_config(config, jax.device_count(), training=False)
    path = epath.Path(workdir if files.is_url(workdir) else os.path.abspath(workdir))
    if not workdir_lib.check_same_run(config, workdir):
        raise errors.ConfigError(
            f"{workdir} holds no training run (no config.json): pass the --workdir of a run"
        )
    data = experiment.data_source(config)
    mesh = sharding.make_mesh()
    run = experiment.create_experiment(config, data, mesh)
    model, base_key = run.model, run.base_key
    state, checkpoint_step = restore_checkpoint(path, run.state, data.num_train, step)
    attack_list = sweep_attacks(config)
    num_batches = data.num_eval_batches
    logging.info(
        "Evaluating %s at step %d: %d PGD attacks on %d examples of %s, then suite %r at eps %s.",
        workdir,
        checkpoint_step,
        len(attack_list),
        data.num_eval,
        data.evaluated_split,
        config.eval_suite or None,
        ", ".join(f"{e:.4f}" for e in suite_epsilons(config)) or "-",
    )
    key = sharding.replicate(jax.random.fold_in(base_key, pgd.Stream.SWEEP_KEY), mesh)
    unroll = experiment.unroll_attacks(config)
    batches = list(data.eval_batches())
    results = measure(state, model, mesh, batches, attack_list, key, num_batches, unroll)
    if config.eval_suite:
        suite_key = jax.random.fold_in(base_key, pgd.Stream.SUITE_KEY)
        classes = data.spec.num_classes
        results.update(
            suite_results(config, state, model, mesh, batches, results, suite_key, classes)
        )
        num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
        results["robustbench"] = robustbench_entry(
            config, results, num_params, data.evaluated_split
        )
        for line in sanity.warnings(results["checks"]):
            logging.warning("%s", line)
    del results["flags"]
    if config.eval_corruptions:
        results["corruptions"] = corruption_accuracy(config, state, model, mesh, key)
    results.update(
        checkpoint_step=checkpoint_step,
        dataset=config.dataset,
        split=data.evaluated_split,
        model=config.model,
        method=config.method,
        train_epsilon=config.epsilon,
    )
    if jax.process_index() == 0:
        files.write_text(files.join(workdir, "eval.json"), json.dumps(results, indent=2) + "\n")
        if files.exists(files.join(workdir, "epsilon_table.npy")):
            model_card.write_model_card(config, workdir, results)
        scalars = {"eval/clean_accuracy": results["clean_accuracy"]}
        for row in results["worst_case"]:
            scalars[f"eval/robust_accuracy_eps_{row['epsilon']:.4f}"] = row["robust_accuracy"]
        for run in results.get("autoattack", []):
            scalars[f"eval/{run['suite']}_accuracy_eps_{run['epsilon']:.4f}"] = run[
                "robust_accuracy"
            ]
        metrics_log.write_scalars(path, checkpoint_step, scalars)
    for row in results["worst_case"]:
        logging.info("eps %.4f: robust accuracy %.4f", row["epsilon"], row["robust_accuracy"])
    for run in results.get("autoattack", []):
        after = ", ".join(f"{a['name']} {a['robust_accuracy']:.4f}" for a in run["attacks"])
        logging.info(
            "%s at eps %.4f: robust accuracy %.4f (after %s)",
            run["suite"],
            run["epsilon"],
            run["robust_accuracy"],
            after,
        )
    return results
