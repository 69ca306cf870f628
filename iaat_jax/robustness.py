"""AutoAttack for any JAX classifier, with a radius per example.

    from iaat_jax.robustness import autoattack

    result = autoattack(logits_fn, images, labels, epsilon=0.3)
    result.robust_accuracy         # every attack failed, each break re-checked
    result.robust, result.adversarial, result.broken_by   # per example

`logits_fn(images) -> logits` is any JAX function of float32 images [B, H, W, C] in [0, 1]: a
Flax module's apply with its weights bound, an Equinox module, plain jax.numpy, or the `call` of
a deserialized `jax.export` artifact (serialized with its VJP). It must be deterministic and
treat each example on its own (BatchNorm on running statistics): the sanity checks say if not.

The suites are those of `--mode=evaluate` (iaat_jax/attacks/autoattack.py runs them for both):
'autoattack' (standard: APGD-CE, APGD-T, FAB-T, Square), 'autoattack_cpu', 'apgd', 'smoke'. The
attacks run data-parallel over the local devices. Importing this module needs no TensorFlow.
"""

import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from iaat_jax.attacks import autoattack as suites
from iaat_jax.attacks import pgd, sanity
from iaat_jax.evaluation import robustness_command as command
from iaat_jax.run import sharding
from iaat_jax.run.sharding import DATA_AXIS

SUITES = tuple(suites.SUITES)


@dataclasses.dataclass(frozen=True)
class Result:
    """What a suite found, example by example and in total."""

    clean: np.ndarray  # [N] bool: classified correctly
    robust: np.ndarray  # [N] bool: correct, and no attack found a (re-checked) break
    broken_by: np.ndarray  # [N] str: the attack whose break counted, '' where none did
    adversarial: np.ndarray | None  # [N, H, W, C]: that break's image, else the clean one
    epsilon: np.ndarray  # [N]: each example's radius as given (the attacks use it in float32)
    suite: str
    attacks: list[dict]  # per attack: its budget, robust accuracy after it, breaks, seconds
    checks: dict  # AutoAttack's sanity checks, and breaks the re-check refused
    seconds: float

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean.mean())

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.mean())

    @property
    def robust_accuracy_after(self) -> dict[str, float]:
        """The robust accuracy after each attack of the suite, in its order."""
        return {a["name"]: a["robust_accuracy"] for a in self.attacks}

    @property
    def warnings(self) -> list[str]:
        """One line per sanity check that fired."""
        return sanity.warnings(self.checks)

    @property
    def robustbench(self) -> dict:
        """The result as a RobustBench-style entry (L-inf; `eps` None for radii per example)."""
        radii = np.unique(self.epsilon)
        return {
            "threat_model": "Linf",
            "eps": float(radii[0]) if len(radii) == 1 else None,
            "n_examples": len(self.clean),
            "clean_acc": self.clean_accuracy,
            "autoattack_acc": self.robust_accuracy,
            "suite": self.suite,
            "robust_acc_after": self.robust_accuracy_after,
        }


@functools.lru_cache(maxsize=16)  # one per function: the attack programs are cached with it
def _closure(logits_fn: Callable) -> suites.Classifier:
    return lambda _, images: logits_fn(images)


def _bound(logits_fn: Callable, variables) -> suites.Classifier:
    """(variables, images) -> logits: `logits_fn(variables, images)` where variables are given,
    else `logits_fn(images)` (whatever it closes over is compiled into the attacks' programs)."""
    return logits_fn if variables is not None else _closure(logits_fn)


@functools.lru_cache(maxsize=16)
def _predict(classify: suites.Classifier, mesh):
    """`predict(variables, images) -> logits`, data-parallel over `mesh`."""
    sharded = jax.shard_map(
        lambda variables, images: classify(variables, images),
        mesh=mesh,
        in_specs=(P(), P(DATA_AXIS)),
        out_specs=P(DATA_AXIS),
        check_vma=False,  # as the attacks' (iaat_jax/attacks/autoattack.py)
    )
    return jax.jit(sharded)


def _check_inputs(images, labels, radii, ids, suite) -> None:
    if images.ndim != 4:
        raise ValueError(f"images have shape {images.shape}: give [N, H, W, C]")
    if not len(images):
        raise ValueError("no images: give at least one example")
    if labels.shape != (len(images),):
        raise ValueError(f"labels have shape {labels.shape}: give one label per image [N]")
    if ids.shape != (len(images),) or ids.min() < 0 or ids.max() >= 2**31:
        raise ValueError(f"ids have shape {ids.shape}: give one id in [0, 2**31) per image [N]")
    if not np.all(np.isfinite(images)) or images.min() < 0.0 or images.max() > 1.0:
        raise ValueError("images are outside [0, 1]: scale pixels to [0, 1] (e.g. uint8 / 255)")
    if not np.all(np.isfinite(radii)) or np.any(radii < 0):
        raise ValueError("epsilon must be finite and >= 0 (one radius, or one per example)")
    if isinstance(suite, str):
        if suite not in suites.SUITES:
            raise ValueError(f"unknown suite {suite!r}: choose one of {', '.join(SUITES)}")
    elif not suite or any(a.name not in suites.ATTACK_NAMES for a in suite):
        raise ValueError(f"a suite of your own is SuiteAttacks named {suites.ATTACK_NAMES}")


def autoattack(
    logits_fn: Callable,
    images,
    labels,
    epsilon: float | Sequence[float] | np.ndarray = 8 / 255,
    *,
    suite: str | tuple[suites.SuiteAttack, ...] = "autoattack",
    batch_size: int = 500,
    key: jax.Array | None = None,
    ids=None,
    variables: Any = None,
    devices: Sequence[jax.Device] | None = None,
    checks: bool = True,
    keep_adversarial: bool = True,
) -> Result:
    """Run AutoAttack's `suite` (a name of SUITES, or SuiteAttacks of your own) on `logits_fn`
    at `epsilon` (one L-inf radius, or one per example [N]) and return the per-example
    verdicts, the images that broke them and the totals.

    `ids` [N] key each example's random noise (default: its position), so a verdict does not
    depend on the batch an example lands in; `key` seeds the noise (default: key 0). With
    `variables`, `logits_fn(variables, images)`: the weights stay arguments of the compiled
    programs instead of constants. `devices`: where to run (default: every local device).
    `checks`: AutoAttack's sanity checks on the first batch (gradient masking, zero gradients,
    randomness). An example counts as broken only if the image an attack returned, inside its
    ball and [0, 1], is misclassified by a fresh forward pass. `keep_adversarial` False: no
    copy of the images is kept (`result.adversarial` is None).
    """
    started = time.perf_counter()
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels).astype(np.int32)
    count = len(images)
    try:
        given = np.broadcast_to(np.asarray(epsilon, np.float64), (count,)).copy()
    except ValueError as error:
        raise ValueError(f"epsilon must be one radius or one per example ({count})") from error
    radii = given.astype(np.float32)
    ids = np.arange(count) if ids is None else np.asarray(ids).astype(np.int64)
    _check_inputs(images, labels, radii, ids, suite)
    if jax.process_count() > 1:
        raise ValueError(
            "autoattack runs on one process's devices: on several hosts use python -m "
            "iaat_jax.main --mode=evaluate, which splits the examples over the hosts"
        )
    key = jax.random.key(0) if key is None else key
    mesh = sharding.make_mesh(list(devices) if devices is not None else jax.local_devices())
    size = max(1, math.ceil(batch_size / mesh.size)) * mesh.size
    classify = _bound(logits_fn, variables)
    replicated = sharding.replicate(variables if variables is not None else (), mesh)
    examples = suites.Examples(images, labels, ids)

    predict, logits = _predict(classify, mesh), []
    for start in range(0, count, size):
        rows = np.arange(start, min(start + size, count))
        batch = examples.batch(rows, math.ceil(len(rows) / mesh.size) * mesh.size)
        out = predict(replicated, sharding.shard_rows(batch["image"], mesh))
        logits.append(sharding.local_rows(out)[: len(rows)])
    logits = np.concatenate(logits) if logits else np.zeros((0, 2), np.float32)
    clean = logits.argmax(axis=-1) == labels
    num_classes = logits.shape[-1]

    found = {}
    if checks:
        first = examples.batch(np.arange(min(size, count)), size)
        mask = (np.arange(size) < count).astype(np.float32)
        found = sanity.model_checks(classify, replicated, mesh, first, mask)
    # as --mode=evaluate derives the key of its first suite radius from the run's key
    attack_key = jax.random.fold_in(key, pgd.Stream.SUITE_KEY)
    attack_key = jax.random.fold_in(attack_key, pgd.Stream.SUITE_RADIUS)
    chosen = suites.SUITES[suite] if isinstance(suite, str) else tuple(suite)
    outcome = suites.run_suite(
        classify,
        replicated,
        mesh,
        examples,
        clean,
        chosen,
        radii,
        attack_key,
        size,
        num_classes,
        keep_adversarial=keep_adversarial,
    )
    if checks and chosen[-1].name == "square" and len(chosen) > 1:  # after white-box attacks
        found.update(sanity.square_check(outcome.attacks[-1]["broken"], count))
    found["unconfirmed_breaks"] = outcome.unconfirmed
    names = np.array([a.name for a in chosen] + [""])
    return Result(
        clean=clean,
        robust=outcome.robust,
        broken_by=names[outcome.broken_by],  # -1: the '' at the end
        adversarial=outcome.adversarial,
        epsilon=given,
        suite=suite if isinstance(suite, str) else "+".join(a.name for a in chosen),
        attacks=outcome.attacks,
        checks=found,
        seconds=time.perf_counter() - started,
    )


def main(argv: list[str] | None = None) -> int:
    """The command: the suite's verdict on every example, its totals, and --out's eval.json."""
    import json

    from absl import logging

    from iaat_jax.errors import CheckpointError, ConfigError
    from iaat_jax.run import files

    args = command.parser().parse_args(argv)
    logging.set_verbosity(logging.INFO)
    try:
        seed, run_dataset, variables = args.seed, None, None
        # the data first where the arguments name it: a bad --npz or --dataset costs no model
        data = command.data(args, None) if args.npz or args.dataset else None
        if args.exported:
            logits_fn, model = command.load_exported(args.exported), args.exported
        else:
            from iaat_jax.trained import load

            classifier = load(args.workdir)
            # the form --mode=evaluate attacks (faster on a CPU; the same logits to rounding)
            logits_fn = suites.flax_classifier(classifier.model)
            variables, model = classifier.variables, args.workdir
            run_dataset = classifier.config.dataset
            seed = classifier.config.seed if seed is None else seed
        images, labels, ids, dataset, split = data or command.data(args, run_dataset)
        if args.num_examples is not None:
            if args.num_examples < 1:
                raise ValueError(f"--num_examples={args.num_examples}: give at least 1")
            images, labels = images[: args.num_examples], labels[: args.num_examples]
            ids = None if ids is None else ids[: args.num_examples]
        # the run's base key, as --mode=evaluate derives it from config.seed
        key = jax.random.split(jax.random.key(seed or 0))[1]
        result = autoattack(
            logits_fn,
            images,
            labels,
            args.epsilon,
            suite=args.suite,
            batch_size=args.batch_size,
            key=key,
            ids=ids,
            variables=variables,
            keep_adversarial=False,
        )
    except (ValueError, ConfigError, CheckpointError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    after = ", ".join(f"{name} {value:.4f}" for name, value in result.robust_accuracy_after.items())
    print(f"clean accuracy {result.clean_accuracy:.4f} on {len(labels)} examples")
    print(
        f"{result.suite} at eps {args.epsilon:.4f}: robust accuracy {result.robust_accuracy:.4f}"
        f" (after {after}) in {result.seconds:.0f} s"
    )
    for line in result.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if args.out:
        record = command.eval_json(result, dataset, split, model)
        files.write_text(args.out, json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
