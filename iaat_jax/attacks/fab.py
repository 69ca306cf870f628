"""FAB-T (Croce and Hein, ICML 2020), L-inf: the fast adaptive boundary attack, targeted.

FAB looks for the smallest L-inf perturbation that changes the prediction. Each iteration
linearises the target's logit margin z_t - z_y at the current point, projects both the current
point and the original image onto that hyperplane (the smallest L-inf step that reaches it
inside [0, 1], `project_onto_hyperplane`), and moves to a convex combination of the two
projections, extrapolated by eta; once a point is misclassified it steps back towards the image
by beta. It uses no radius: a success counts at radius eps only if the distance found is <= eps,
so one run gives every example's verdict at its own radius. Images are [B, H, W, C] in [0, 1].
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

# AutoAttack's FAB constants (fab_base.py): the most weight on the original image's projection,
# the overshoot of each projection, the step back after a success
ALPHA_MAX, ETA, BETA = 0.1, 1.05, 0.9


def project_onto_hyperplane(
    points: jnp.ndarray, normals: jnp.ndarray, offsets: jnp.ndarray, bisections: int = 30
):
    """The smallest L-inf steps d [B, N] with normals . (points + d) = offsets and points + d in
    [0, 1]; where the box does not reach the hyperplane, the step to the box corner that comes
    closest. points, normals [B, N]; offsets [B].

    Moving each coordinate by up to delta towards the hyperplane (and not past the box) changes
    the side's value by R(delta) = sum_i |w_i| min(delta, room_i), piecewise linear and
    increasing; the answer is the smallest delta with R(delta) = |residual|. Bisection brackets
    it (no sort: sorting is slow on CPUs), then the bracket's linear piece gives it exactly.
    """
    residual = jnp.sum(normals * points, axis=1) - offsets
    # direction of each coordinate's move: against the normal on the residual's side
    direction = -jnp.sign(normals) * jnp.where(residual >= 0, 1.0, -1.0)[:, None]
    room = jnp.where(direction > 0, 1.0 - points, points)  # distance to the box face ahead
    weight = jnp.abs(normals)
    needed = jnp.abs(residual)
    reach = lambda delta: jnp.sum(weight * jnp.minimum(delta[:, None], room), axis=1)
    low, high = jnp.zeros_like(needed), jnp.max(room, axis=1)
    feasible = reach(high) >= needed
    for _ in range(bisections):
        middle = (low + high) / 2
        enough = reach(middle) >= needed
        low, high = jnp.where(enough, low, middle), jnp.where(enough, middle, high)
    # on (low, high] the coordinates with room <= low are saturated, the others move by delta
    saturated = room <= low[:, None]
    gain = jnp.sum(jnp.where(saturated, weight * room, 0.0), axis=1)
    slope = jnp.sum(jnp.where(saturated, 0.0, weight), axis=1)
    delta = jnp.clip((needed - gain) / jnp.maximum(slope, 1e-30), low, high)
    delta = jnp.where(feasible, delta, jnp.inf)
    return direction * jnp.minimum(delta[:, None], room)


def fab_targeted(
    logits_fn: Callable[[jnp.ndarray], jnp.ndarray],
    images: jnp.ndarray,
    labels: jnp.ndarray,
    targets: jnp.ndarray,
    num_steps: int,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """FAB-T from the clean images towards `targets` [B]. Returns (the closest misclassified
    point found, else the image; its L-inf distance [B], inf where none was found)."""
    images = images.astype(jnp.float32)
    batch, shape = images.shape[0], images.shape
    origin = images.reshape(batch, -1)

    def margin(x):  # z_t - z_y [B]; >= 0 at the target's side of the boundary
        logits = logits_fn(x.reshape(shape)).astype(jnp.float32)
        pick = lambda classes: jnp.take_along_axis(logits, classes[:, None], axis=1)[:, 0]
        return pick(targets) - pick(labels)

    def iterate(_, state):
        x, best, best_distance = state
        value, pullback = jax.vjp(margin, x)  # examples do not interact: per-example gradients
        (normal,) = pullback(jnp.ones_like(value))
        offset = jnp.sum(normal * x, axis=1) - value  # hyperplane: normal . z = offset
        steps = project_onto_hyperplane(
            jnp.concatenate([x, origin]),
            jnp.concatenate([normal, normal]),
            jnp.concatenate([offset, offset]),
        )
        from_x, from_origin = steps[:batch], steps[batch:]
        size_x = jnp.maximum(jnp.abs(from_x).max(axis=1, keepdims=True), 1e-8)
        size_origin = jnp.maximum(jnp.abs(from_origin).max(axis=1, keepdims=True), 1e-8)
        alpha = jnp.clip(size_x / (size_x + size_origin), 0.0, ALPHA_MAX)
        x = (x + ETA * from_x) * (1 - alpha) + (origin + ETA * from_origin) * alpha
        x = jnp.clip(x, 0.0, 1.0)
        logits = logits_fn(x.reshape(shape))
        fooled = jnp.argmax(logits, axis=-1) != labels
        distance = jnp.abs(x - origin).max(axis=1)
        closer = fooled & (distance < best_distance)
        best = jnp.where(closer[:, None], x, best)
        best_distance = jnp.where(closer, distance, best_distance)
        x = jnp.where(fooled[:, None], origin + (x - origin) * BETA, x)
        return x, best, best_distance

    start = (origin, origin, jnp.full_like(origin[:, 0], jnp.inf))
    _, best, best_distance = jax.lax.fori_loop(0, num_steps, iterate, start)
    return best.reshape(shape), best_distance
