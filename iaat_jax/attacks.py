"""Vectorised L-inf PGD with a radius and a step size per example.

All arrays are float32; images are [B, H, W, C] in [0, 1], radii and step sizes are [B].
`loss_fn(images, labels) -> [B]` is any per-example loss; its gradient drives the ascent.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

LossFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


def pgd_step_size(epsilon: jnp.ndarray, num_steps: int, step_min: float) -> jnp.ndarray:
    """Reference step size rule [B]: max(eps / (steps / 2), step_min)."""
    return jnp.maximum(epsilon / (num_steps / 2), step_min)


def _per_example(values: jnp.ndarray, images: jnp.ndarray) -> jnp.ndarray:
    """Broadcast [B] against [B, H, W, C]."""
    return values.reshape((-1,) + (1,) * (images.ndim - 1)).astype(jnp.float32)


def project(adversarial: jnp.ndarray, images: jnp.ndarray, epsilon: jnp.ndarray) -> jnp.ndarray:
    """Project onto each example's L-inf ball of radius epsilon [B], then onto [0, 1]."""
    eps = _per_example(epsilon, images)
    return jnp.clip(jnp.clip(adversarial, images - eps, images + eps), 0.0, 1.0)


def random_start(images: jnp.ndarray, epsilon: jnp.ndarray, keys: jax.Array) -> jnp.ndarray:
    """Uniform start in each example's ball; `keys` [B] holds one PRNG key per example.

    A key per example (derived from its id) makes the noise independent of how the batch is
    split across devices.
    """
    unit = jax.vmap(lambda k: jax.random.uniform(k, images.shape[1:], minval=-1.0, maxval=1.0))
    return project(images + unit(keys) * _per_example(epsilon, images), images, epsilon)


def pgd_attack(
    loss_fn: LossFn,
    images: jnp.ndarray,
    labels: jnp.ndarray,
    epsilon: jnp.ndarray,
    step_size: jnp.ndarray,
    num_steps: int,
    keys: jax.Array,
) -> jnp.ndarray:
    """PGD-`num_steps`: sign-gradient ascent on loss_fn from a random start, inside each ball."""
    images = images.astype(jnp.float32)
    step = _per_example(step_size, images)
    total_loss_grad = jax.grad(lambda x: loss_fn(x, labels).sum())

    def ascend(_, adversarial):
        gradient = total_loss_grad(adversarial).astype(jnp.float32)
        return project(adversarial + step * jnp.sign(gradient), images, epsilon)

    start = random_start(images, epsilon, keys)
    return jax.lax.fori_loop(0, num_steps, ascend, start)
