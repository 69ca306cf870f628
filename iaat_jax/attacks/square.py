"""Square (Andriushchenko et al., ECCV 2020), L-inf: a random search that needs no gradient.

It starts at a corner of each example's ball made of vertical stripes (one random sign per
column and channel) and then, query by query, tries a random square window moved to the
opposite face of the ball (one random sign per channel); a try is kept where it lowers the
margin z_y - max_{i != y} z_i. The window's area is a share p of the image that shrinks on a
fixed schedule. Needing only the model's outputs, it is AutoAttack's check against gradient
masking. Radii are per example [B]; window positions and signs are drawn per example from its
own key, so an example's attack does not depend on the rest of its batch.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from iaat_jax.attacks import pgd

P_INIT = 0.8  # AutoAttack's initial window share
# (first query after which p is halved again, p_init / divisor): AutoAttack's schedule, not
# rescaled to the budget (its `resc_schedule=False`)
_SCHEDULE = ((10, 2), (50, 4), (200, 8), (500, 16), (1000, 32), (2000, 64), (4000, 128))
_SCHEDULE_TAIL = ((6000, 256), (8000, 512))


def window_share(query, p_init: float = P_INIT):
    """The window's share of the image at 0-based `query` (an int or a traced scalar)."""
    share = jnp.float32(p_init)
    for after, divisor in _SCHEDULE + _SCHEDULE_TAIL:
        share = jnp.where(query > after, p_init / divisor, share)
    return share


def window_side(query, height: int, width: int, p_init: float = P_INIT):
    """The window's side in pixels: round(sqrt(p * H * W)), between 1 and min(H, W)."""
    side = jnp.round(jnp.sqrt(window_share(query, p_init) * height * width)).astype(jnp.int32)
    return jnp.clip(side, 1, min(height, width))


def margin(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """z_y - max_{i != y} z_i [B]: <= 0 where the example is misclassified."""
    return -pgd.margin_loss(logits, labels)


def square_attack(
    logits_fn: Callable[[jnp.ndarray], jnp.ndarray],
    images: jnp.ndarray,
    labels: jnp.ndarray,
    epsilon: jnp.ndarray,
    num_queries: int,
    keys: jax.Array,
    p_init: float = P_INIT,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Square at radius epsilon [B] for `num_queries` queries after the start; `keys` [B] one
    PRNG key per example. Returns (the best point, [B] bool: some query was misclassified).
    An example stops changing once misclassified (its queries end there, as in AutoAttack)."""
    images = images.astype(jnp.float32)
    batch, height, width, channels = images.shape
    eps = pgd.broadcast_rows(epsilon, images)
    rows = jnp.arange(height)[None, :, None, None]
    cols = jnp.arange(width)[None, None, :, None]

    def signs(shape):  # per example: +-1 of `shape` from the example's key
        return jax.vmap(lambda k: jax.random.rademacher(k, shape, jnp.float32))

    def positions(keys, side, size):  # per example: a window start in 0 .. size - side
        return jax.vmap(lambda k: jax.random.randint(k, (), 0, size - side + 1))(keys)

    start_keys = jax.vmap(lambda k: jax.random.fold_in(k, num_queries))(keys)
    stripes = signs((1, width, channels))(start_keys)
    best = pgd.project(images + eps * stripes, images, epsilon)
    best_margin = margin(logits_fn(best), labels)

    def query(i, state):
        best, best_margin = state
        side = window_side(i, height, width, p_init)
        query_keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, i), 3))(keys)
        top = positions(query_keys[:, 0], side, height).reshape(-1, 1, 1, 1)
        left = positions(query_keys[:, 1], side, width).reshape(-1, 1, 1, 1)
        inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
        moved = best + inside * 2.0 * eps * signs((1, 1, channels))(query_keys[:, 2])
        candidate = pgd.project(moved, images, epsilon)
        candidate_margin = margin(logits_fn(candidate), labels)
        keep = (best_margin > 0) & (candidate_margin < best_margin)
        best = jnp.where(keep[:, None, None, None], candidate, best)
        return best, jnp.where(keep, candidate_margin, best_margin)

    def going(state):  # stop early once every example of the batch is misclassified
        i, (_, best_margin) = state
        return (i < num_queries) & jnp.any(best_margin > 0)

    def step(state):
        i, inner = state
        return i + 1, query(i, inner)

    _, (best, best_margin) = jax.lax.while_loop(going, step, (0, (best, best_margin)))
    return best, best_margin <= 0
