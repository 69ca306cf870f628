"""AutoAttack's protocol (Croce and Hein, ICML 2020) with a radius per example, in JAX.

At a test radius the suite's attacks run in order (standard AutoAttack: APGD-CE, APGD-T at 9
target classes, FAB-T at 9, Square with 5,000 queries), each only on the examples that are
classified correctly clean and that every earlier attack left robust. The survivors are gathered
into full batches (static shapes for XLA), so a later attack costs only what remains; on several
hosts each host gathers its own and all hosts run the same number of batches. Noise is keyed by
example id, so an example's verdict does not depend on the batch it lands in.

Every break an attack reports is re-checked before it counts: the point it found, put inside the
example's ball and [0, 1], must be misclassified by a fresh forward pass. The classifier is any
`classify(variables, images) -> logits` (images in [0, 1]); `flax_classifier` makes one of a
Flax module; iaat_jax.robustness makes one of any JAX function.
"""

import dataclasses
import functools
import math
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from iaat_jax.attacks import fab, pgd, square
from iaat_jax.models import inference
from iaat_jax.run import metrics_log, sharding
from iaat_jax.run.sharding import DATA_AXIS


@dataclasses.dataclass(frozen=True)
class SuiteAttack:
    """One attack of a suite and its budget."""

    name: str  # 'apgd-ce', 'apgd-t', 'fab-t' or 'square'
    iterations: int  # APGD and FAB iterations; Square: queries
    targets: int = 1  # apgd-t, fab-t: target classes, the clean logits' runner-up first

    def budget(self, num_classes: int) -> dict:
        """What eval.json records of this attack (targets as run, at most num_classes - 1)."""
        budget = {"name": self.name, "iterations": self.iterations}
        if self.name in ("apgd-t", "fab-t"):
            budget["targets"] = min(self.targets, num_classes - 1)
        if self.name == "square":
            budget.update(queries=budget.pop("iterations"), p_init=square.P_INIT)
        return budget


ATTACK_NAMES = ("apgd-ce", "apgd-t", "fab-t", "square")
SUITES = {
    # AutoAttack's "standard" version, the field's and RobustBench's yardstick
    "autoattack": (
        SuiteAttack("apgd-ce", 100),
        SuiteAttack("apgd-t", 100, 9),
        SuiteAttack("fab-t", 100, 9),
        SuiteAttack("square", 5000),
    ),
    # the same attacks on a CPU budget: fewer targets and queries (README "Evaluation")
    "autoattack_cpu": (
        SuiteAttack("apgd-ce", 100),
        SuiteAttack("apgd-t", 100, 3),
        SuiteAttack("fab-t", 100, 3),
        SuiteAttack("square", 1000),
    ),
    # the white-box part alone
    "apgd": (SuiteAttack("apgd-ce", 100), SuiteAttack("apgd-t", 100, 9)),
    # every attack for a few iterations: smoke runs and tests, not a measurement
    "smoke": (
        SuiteAttack("apgd-ce", 5),
        SuiteAttack("apgd-t", 5, 2),
        SuiteAttack("fab-t", 5, 2),
        SuiteAttack("square", 50),
    ),
}


Classifier = inference.Logits  # (variables, images) -> logits


def flax_classifier(model: nn.Module) -> Classifier:
    """`model`'s logits in evaluation mode (BatchNorm on running statistics), in the faster
    form of iaat_jax/models/inference.py where it has one; one function per module, so the
    attack programs below are cached with it."""
    return inference.evaluation_logits(model)


@dataclasses.dataclass
class Examples:
    """This host's evaluation examples in memory: image [n, H, W, C], label [n], id [n]."""

    image: np.ndarray
    label: np.ndarray
    id: np.ndarray

    @classmethod
    def from_batches(cls, batches) -> "Examples":
        """The real (mask 1) rows of padded evaluation batches."""
        parts = {"image": [], "label": [], "id": []}
        for batch in batches:
            real = batch["mask"] > 0
            for name in parts:
                parts[name].append(np.asarray(batch[name])[real])
        return cls(**{name: np.concatenate(rows) for name, rows in parts.items()})

    def batch(self, rows: np.ndarray, size: int) -> dict:
        """The examples `rows` (at most `size`) as a batch of `size`, padded with row 0."""
        padded = np.zeros(size, np.int64)
        padded[: len(rows)] = rows
        return {"image": self.image[padded], "label": self.label[padded], "id": self.id[padded]}


def _targets(clean_logits: jnp.ndarray, rank) -> jnp.ndarray:
    """The class ranked `rank` (1: the runner-up) by each example's clean logits [B]."""
    return jnp.take(jnp.argsort(-clean_logits, axis=-1), rank, axis=1)


@functools.lru_cache(maxsize=64)  # a program per (classifier, mesh, attack, iterations)
def make_attack_step(classify: Classifier, mesh: Mesh, name: str, iterations: int):
    """`attack_step(variables, batch, radius, key, target_rank) -> {broken, claimed,
    adversarial}`: one suite attack at a radius per example [B].

    `claimed` [B] (1.0): the attack reports a misclassified point inside the ball (any iterate
    for APGD, FAB's closest point for FAB-T, any query for Square). `adversarial` is that point
    (else the attack's last or best one) projected onto the ball and [0, 1], and `broken` [B]
    says a fresh forward pass misclassifies it: only that counts. Loops stay rolled: on a CPU
    an unrolled APGD-100 runs no faster and compiles 30x longer.
    """

    def device_attack(variables, batch, radius, key, target_rank):
        images, labels = batch["image"], batch["label"]
        logits_fn = lambda x: classify(variables, x)
        keys = pgd.example_keys(key, pgd.Stream.SUITE, batch["id"])
        if name == "apgd-ce":
            found, claimed = pgd.apgd_attack(
                logits_fn, pgd.cross_entropy, images, labels, radius, iterations, keys
            )
        elif name == "apgd-t":
            targets = _targets(logits_fn(images), target_rank)
            loss = lambda logits, y: pgd.targeted_dlr_loss(logits, y, targets)
            found, claimed = pgd.apgd_attack(
                logits_fn, loss, images, labels, radius, iterations, keys
            )
        elif name == "fab-t":
            targets = _targets(logits_fn(images), target_rank)
            found, distance = fab.fab_targeted(logits_fn, images, labels, targets, iterations)
            claimed = distance <= radius
        else:
            found, claimed = square.square_attack(
                logits_fn, images, labels, radius, iterations, keys
            )
        adversarial = pgd.project(found, images.astype(jnp.float32), radius)
        broken = jnp.argmax(logits_fn(adversarial), axis=-1) != labels
        return {
            "broken": broken.astype(jnp.float32),
            "claimed": claimed.astype(jnp.float32),
            "adversarial": adversarial,
        }

    sharded = jax.shard_map(
        device_attack,
        mesh=mesh,
        in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P(), P()),
        out_specs=P(DATA_AXIS),
        check_vma=False,  # no collective inside; lets a jax.export artifact's VJP be traced
    )
    return jax.jit(sharded)


def _batches(rows: np.ndarray, size: int, devices: int):
    """(rows, batch size) of full batches of `size`, the last one rounded up to a quarter of
    `size` (fewer padded rows, at most four programs per attack), the same number of batches
    and sizes on every host."""
    counts = sharding.every_host(len(rows))[:, 0]
    num_batches = math.ceil(counts.max() / size)
    quarter = max(math.ceil(size / 4 / devices) * devices, devices)
    last = int(counts.max()) - (num_batches - 1) * size  # the host with the most rows decides
    for index in range(num_batches):
        batch_size = size if index < num_batches - 1 else math.ceil(last / quarter) * quarter
        yield rows[index * size : index * size + batch_size], min(batch_size, size)


def _cost(attack: SuiteAttack) -> float:
    """Relative seconds per example of one target's run, for the ETA only (measured on a CPU,
    SmallCNN in the attacks' form: an APGD iteration 1, a FAB iteration 1.5, a Square query
    0.35; docs/evaluation.md "Cost")."""
    per_iteration = {"apgd-ce": 1.0, "apgd-t": 1.0, "fab-t": 1.5, "square": 0.35}[attack.name]
    return per_iteration * attack.iterations


@dataclasses.dataclass
class SuiteOutcome:
    """What a suite found on this host's examples: `robust` [n] (correct clean and never
    broken), `broken_by` [n] (the suite index of the attack whose re-checked break counted, -1
    where none did), `adversarial` [n, H, W, C] (that break's image, else the clean image; None
    unless kept), per attack `attacks` (its budget, the global robust accuracy after it, how many
    it broke, its seconds), and `unconfirmed`: breaks reported that the re-check refused."""

    robust: np.ndarray
    broken_by: np.ndarray
    adversarial: np.ndarray | None
    attacks: list[dict]
    unconfirmed: int


def run_suite(
    classify: Classifier,
    variables,
    mesh: Mesh,
    examples: Examples,
    robust: np.ndarray,
    suite: tuple[SuiteAttack, ...],
    epsilon,
    key: jax.Array,
    local_batch: int,
    num_classes: int,
    keep_adversarial: bool = False,
) -> SuiteOutcome:
    """The suite at `epsilon` (one radius, or one per example [n]) on this host's examples,
    starting from `robust` [n] (the clean-correct flags); `variables` replicated on `mesh`."""
    robust = robust.astype(bool).copy()
    radii = np.broadcast_to(np.asarray(epsilon, np.float32), robust.shape)
    broken_by = np.full(len(robust), -1, np.int8)
    adversarial = examples.image.astype(np.float32) if keep_adversarial else None
    total = int(sharding.every_host(len(robust)).sum())
    # one stage per (attack, target): each runs on the survivors of the stages before it
    stages = [
        (number, rank)
        for number, attack in enumerate(suite)
        for rank in range(1, attack.budget(num_classes).get("targets", 1) + 1)
    ]
    same = len(radii) > 0 and np.all(radii == radii[0])
    radius_text = f"{radii[0]:.4f}" if same else "per example"
    started, spent, unconfirmed = time.perf_counter(), 0.0, 0
    results, before, attack_started = [], int(sharding.every_host(robust.sum()).sum()), started
    for stage, (number, rank) in enumerate(stages):
        attack = suite[number]
        attack_step = make_attack_step(classify, mesh, attack.name, attack.iterations)
        # keyed by the attack's name: the same noise in any suite that runs it
        attack_key = jax.random.fold_in(key, ATTACK_NAMES.index(attack.name))
        attack_key = sharding.replicate(attack_key, mesh)
        rank_array = sharding.replicate(np.int32(rank), mesh)
        survivors = np.flatnonzero(robust)
        for rows, size in _batches(survivors, local_batch, len(mesh.local_devices)):
            batch = examples.batch(rows, size)
            radius = np.zeros(size, np.float32)
            radius[: len(rows)] = radii[rows]
            found = attack_step(
                variables,
                sharding.device_batch(batch, mesh),
                sharding.shard_rows(radius, mesh),
                attack_key,
                rank_array,
            )
            broken = sharding.local_rows(found["broken"])[: len(rows)] > 0
            claimed = sharding.local_rows(found["claimed"])[: len(rows)] > 0
            unconfirmed += int(np.sum(claimed & ~broken))
            robust[rows[broken]] = False
            broken_by[rows[broken]] = number
            if keep_adversarial:
                adversarial[rows[broken]] = sharding.local_rows(found["adversarial"])[: len(rows)][
                    broken
                ]
        spent += len(survivors) * _cost(attack)
        rate = (time.perf_counter() - started) / max(spent, 1e-9)
        eta = rate * robust.sum() * sum(_cost(suite[n]) for n, _ in stages[stage + 1 :])
        robust_now = int(sharding.every_host(robust.sum()).sum())
        targets = attack.budget(num_classes).get("targets", 1)
        logging.info(
            "AutoAttack suite at eps %s: %s%s: %d of %d robust | ETA %s",
            radius_text,
            attack.name,
            f" target {rank}/{targets}" if targets > 1 else "",
            robust_now,
            total,
            metrics_log.format_seconds(eta),
        )
        if rank == targets:  # the attack's last stage
            results.append(
                dict(
                    attack.budget(num_classes),
                    robust_accuracy=robust_now / total,
                    broken=before - robust_now,
                    seconds=time.perf_counter() - attack_started,
                )
            )
            before, attack_started = robust_now, time.perf_counter()
    unconfirmed = int(sharding.every_host(np.int64(unconfirmed)).sum())
    return SuiteOutcome(robust, broken_by, adversarial, results, unconfirmed)
