"""AutoAttack's sanity checks of an evaluation: signs that its numbers cannot be trusted.

- gradient masking: Square, which needs no gradient, breaks examples that every white-box
  attack left robust (AutoAttack warns above 0.2% of the examples);
- zero gradients: the input gradient of the loss is exactly zero for some examples, so
  gradient-based attacks cannot move them;
- randomness: two forward passes of the same examples disagree (in JAX: the logits depend on
  a random draw or on the other examples of the batch, e.g. BatchNorm on batch statistics).
Each returns numbers for eval.json; `warnings` turns them into log lines.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from iaat_jax.attacks import pgd
from iaat_jax.run import sharding
from iaat_jax.run.sharding import DATA_AXIS

SQUARE_ALPHA = 0.002  # AutoAttack's check_square_sr: a larger share broken by Square warns
RANDOM_ALPHA = 1e-4  # AutoAttack's check_randomized: largest change of L2-normalised logits


@functools.lru_cache(maxsize=16)
def _probe(classify: Callable, mesh: Mesh):
    """`probe(variables, batch) -> (logits [B, K], |input gradient of CE| summed [B])`."""

    def device_probe(variables, batch):
        logits_fn = lambda x: classify(variables, x)
        total_loss = lambda x: pgd.cross_entropy(logits_fn(x), batch["label"]).sum()
        gradient = jax.grad(total_loss)(batch["image"].astype(jnp.float32))
        size = jnp.abs(gradient).reshape(gradient.shape[0], -1).sum(axis=1)
        return logits_fn(batch["image"]), size

    sharded = jax.shard_map(
        device_probe,
        mesh=mesh,
        in_specs=(P(), P(DATA_AXIS)),
        out_specs=P(DATA_AXIS),
        check_vma=False,  # as the attacks' (iaat_jax/attacks/autoattack.py)
    )
    return jax.jit(sharded)


def model_checks(classify: Callable, variables, mesh: Mesh, batch: dict, mask: np.ndarray) -> dict:
    """Zero gradients and randomness of `classify(variables, images) -> logits` on one host
    batch (rows with mask 1 count). For the randomness check the batch's first half is passed
    again, shifted by one row and beside a copy of itself instead of the second half: each of
    its examples moves to another position among other examples (on several devices: other
    examples on its device)."""
    probe = _probe(classify, mesh)
    logits, gradient_size = probe(variables, sharding.device_batch(batch, mesh))
    count = len(mask)
    half = count // 2
    order = np.r_[np.roll(np.arange(half), -1), np.arange(count - half)]
    moved = {name: np.asarray(value)[order] for name, value in batch.items()}
    logits_again, _ = probe(variables, sharding.device_batch(moved, mesh))
    first = sharding.local_rows(logits)[:half]
    again = np.roll(sharding.local_rows(logits_again)[:half], 1, axis=0)
    unit = lambda z: z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-10)
    change = np.linalg.norm(unit(first) - unit(again), axis=1)
    real = mask > 0
    largest = float(np.max(change[real[:half]], initial=0.0))
    largest = float(sharding.every_host(np.float32(largest)).max())
    zero = np.sum((sharding.local_rows(gradient_size) == 0) & real)
    return {
        "zero_gradient_examples": int(sharding.every_host(zero).sum()),
        "checked_examples": int(sharding.every_host(real.sum()).sum()),
        "logits_change_between_passes": largest,
        "randomness_suspected": largest > RANDOM_ALPHA,
    }


def square_check(broken_by_square: int, num_examples: int) -> dict:
    """Square's breaks after every white-box attack: a share above SQUARE_ALPHA warns."""
    share = broken_by_square / max(num_examples, 1)
    return {"square_broke": broken_by_square, "gradient_masking_suspected": share > SQUARE_ALPHA}


def warnings(checks: dict) -> list[str]:
    """One log line per check that fired."""
    lines = []
    if checks.get("gradient_masking_suspected"):
        lines.append(
            f"Square broke {checks['square_broke']} examples that every white-box attack left "
            f"robust (over {SQUARE_ALPHA:.1%}): gradients may be masked; trust Square's number "
            "and try more queries or an adaptive attack"
        )
    if checks.get("unconfirmed_breaks"):
        lines.append(
            f"{checks['unconfirmed_breaks']} breaks an attack reported were not misclassified "
            "by a fresh forward pass and were not counted: the logits may be random or depend "
            "on the batch"
        )
    if checks.get("zero_gradient_examples"):
        lines.append(
            f"{checks['zero_gradient_examples']} of {checks['checked_examples']} examples have "
            "an input gradient of exactly zero: gradient-based attacks cannot move them"
        )
    if checks.get("randomness_suspected"):
        lines.append(
            f"two forward passes of the same examples disagree (normalised logits change by "
            f"{checks['logits_change_between_passes']:.2g}): the model is random or depends on "
            "the batch, and attacks against it need more care (AutoAttack's 'rand' version)"
        )
    return lines
