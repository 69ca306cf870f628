"""Robust evaluation over a sweep of test radii: PGD (CE and margin losses, random restarts) and
optionally APGD-CE and targeted APGD-DLR, the white-box part of AutoAttack (not AutoAttack).

An example counts as robust at a radius only if it survives every attack run at that radius
(all attacks, losses, restarts and targets): that per-example worst case is the headline
number. `evaluate_run` restores a run's latest checkpoint and writes `<workdir>/eval.json` and
TensorBoard scalars.
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
from jax.experimental import multihost_utils

from iaat_jax import attacks, config_checks, experiment, files, metrics_log, sharding
from iaat_jax import step as step_lib
from iaat_jax import workdir as workdir_lib
from iaat_jax.checkpoint import Checkpointer


@dataclasses.dataclass(frozen=True)
class Attack:
    """One L-inf attack of the evaluation: PGD, or APGD (whose step size adapts from 2 eps)."""

    loss: str  # pgd: 'ce', 'margin' or 'dlr'; apgd: also 'dlr_targeted'
    epsilon: float
    steps: int
    step_size: float  # pgd only
    restarts: int = 1  # dlr_targeted: one run per target class (runner-up first)
    algorithm: str = "pgd"  # 'pgd' or 'apgd'

    @property
    def name(self) -> str:
        return f"{self.algorithm}-{self.loss}"

    @classmethod
    def with_training_step_size(
        cls, loss: str, epsilon: float, steps: int, step_min: float, restarts: int = 1
    ) -> "Attack":
        """PGD whose step size follows the training rule, max(eps / (steps / 2), step_min)."""
        size = float(attacks.pgd_step_size(np.float32(epsilon), steps, step_min))
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
        for loss in config.sweep_apgd_losses if eps > 0 else ():
            runs = config.sweep_apgd_targets if loss == "dlr_targeted" else config.sweep_restarts
            attack = Attack(loss, float(eps), config.sweep_apgd_steps, 2 * float(eps), runs, "apgd")
            attack_list.append(attack)
    return attack_list


def _global_sum(values: np.ndarray) -> np.ndarray:
    """Sum over hosts of per-host partial sums."""
    if jax.process_count() == 1:
        return values
    return np.asarray(multihost_utils.process_allgather(values)).sum(axis=0)


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
    before the next is read, so the data is read once. `unroll`: unrolled PGD loops.
    """
    eval_steps = {
        (a.algorithm, a.loss, a.steps): (
            step_lib.make_apgd_eval_step(model, mesh, a.loss, a.steps, unroll)
            if a.algorithm == "apgd"
            else step_lib.make_eval_step(model, mesh, a.loss, a.steps, unroll)
        )
        for a in attack_list
    }
    totals = np.zeros(2 + len(attack_list))  # examples, clean-correct, robust per attack
    epsilons = sorted({a.epsilon for a in attack_list})
    worst_totals = np.zeros(len(epsilons))
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
            eval_step = eval_steps[(attack.algorithm, attack.loss, attack.steps)]
            for restart in range(attack.restarts):
                restart_key = jax.random.fold_in(jax.random.fold_in(key, number), restart)
                restart_key = sharding.replicate(restart_key, mesh)
                if attack.algorithm == "apgd":  # restart r of targeted DLR: target ranked r + 1
                    rank = sharding.replicate(np.int32(restart + 1), mesh)
                    flags = eval_step(state, device_batch, radius, restart_key, rank)
                else:
                    flags = eval_step(state, device_batch, radius, size, restart_key)
                clean = sharding.local_rows(flags["clean"])
                robust = robust * sharding.local_rows(flags["robust"])
            totals[2 + number] += np.sum(robust * mask)
            survived[attack.epsilon] = survived[attack.epsilon] * robust
        totals[0] += mask.sum()
        totals[1] += np.sum(clean * mask)
        worst_totals += [survived[eps].sum() for eps in epsilons]
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
    worst_totals = [float(v) for v in _global_sum(worst_totals)]
    count = totals[0]
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
                "robust_accuracy": worst_totals[i] / count,
                "attacks": sorted({a.name for a in attack_list if a.epsilon == eps}),
                "restarts": max(a.restarts for a in attack_list if a.epsilon == eps),
            }
            for i, eps in enumerate(epsilons)
        ],
    }


def corruption_accuracy(config: ml_collections.ConfigDict, state, model, mesh, key) -> dict:
    """Clean accuracy on each TFDS cifar10_corrupted set (19 corruptions x severities 1-5)."""
    from iaat_jax import input_pipeline
    from iaat_jax.datasets import CIFAR10_CORRUPTIONS

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


def restore_latest(workdir: epath.Path, state_template, num_train: int):
    """(restored state, its step) from the newest readable checkpoint; ConfigError if none."""
    checkpoints = Checkpointer(workdir, max_to_keep=None)
    try:
        restored = checkpoints.restore_newest(state_template, num_train)
    finally:
        checkpoints.close()
    if restored is None:
        raise config_checks.ConfigError(
            f"no checkpoint in {workdir}/checkpoints: train first with "
            f"`python -m iaat_jax.main --config=... --workdir={workdir}`"
        )
    return restored[0], int(restored[0].step)


def evaluate_run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Restore the run in `workdir`, run the configured sweep, write eval.json; return it."""
    config_checks.validate_config(config, jax.device_count())
    path = epath.Path(workdir if files.is_url(workdir) else os.path.abspath(workdir))
    if not workdir_lib.check_same_run(config, workdir):
        raise config_checks.ConfigError(
            f"{workdir} holds no training run (no config.json): pass the --workdir of a run"
        )
    data = experiment.data_source(config)
    mesh = sharding.make_mesh()
    run = experiment.create_experiment(config, data, mesh)
    model, base_key = run.model, run.base_key
    state, checkpoint_step = restore_latest(path, run.state, data.num_train)
    attack_list = sweep_attacks(config)
    num_batches = data.num_eval_batches
    logging.info(
        "Evaluating %s at step %d: %d attacks on %d examples.",
        workdir,
        checkpoint_step,
        len(attack_list),
        data.num_eval,
    )
    key = sharding.replicate(jax.random.fold_in(base_key, 7), mesh)
    unroll = experiment.unroll_attacks(config)
    batches = data.eval_batches()
    results = measure(state, model, mesh, batches, attack_list, key, num_batches, unroll)
    if config.eval_corruptions:
        results["corruptions"] = corruption_accuracy(config, state, model, mesh, key)
    results.update(
        checkpoint_step=checkpoint_step,
        dataset=config.dataset,
        model=config.model,
        method=config.method,
        train_epsilon=config.epsilon,
    )
    if jax.process_index() == 0:
        files.write_text(files.join(workdir, "eval.json"), json.dumps(results, indent=2) + "\n")
        scalars = {"eval/clean_accuracy": results["clean_accuracy"]}
        for row in results["worst_case"]:
            scalars[f"eval/robust_accuracy_eps_{row['epsilon']:.4f}"] = row["robust_accuracy"]
        metrics_log.write_scalars(path, checkpoint_step, scalars)
    for row in results["worst_case"]:
        logging.info("eps %.4f: robust accuracy %.4f", row["epsilon"], row["robust_accuracy"])
    return results
