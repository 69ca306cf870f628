"""Vectorised L-inf PGD with a radius and a step size per example, and the losses it ascends.

All arrays are float32; images are [B, H, W, C] in [0, 1], radii and step sizes are [B].
`loss_fn(images, labels) -> [B]` is any per-example loss; its gradient drives the ascent.
"""

import enum
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

LossFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


class Stream(enum.IntEnum):
    """Every number folded into a key for randomness, in one place (their values are what
    make a run replayable: changing one changes every run's noise).

    Per-example streams of a train step's or an evaluation's key (`example_keys`), and the
    keys that evaluation derives from a run's base key."""

    TRAIN_ATTACK = 0  # the training attack's start
    PROBE_PREV = 1  # IAAT's probe at the previous radius
    PROBE_HIGH = 2  # IAAT's probe at the previous radius + gamma
    EVAL_ATTACK = 3  # an evaluation PGD's start
    SUITE = 4  # the attack suite's per-example noise (autoattack)
    SWEEP_KEY = 7  # --mode=evaluate's sweep, from the base key
    SUITE_KEY = 8  # --mode=evaluate's suite, from the base key
    SUITE_RADIUS = 1000  # + the radius's number: the suite at one radius, from SUITE_KEY
    EPOCH_EVAL_KEY = 2**31 - 1  # the per-epoch evaluation during training, from the base key


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Per-example cross-entropy [B]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def margin_loss(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Per-example CW margin [B]: best wrong logit minus the true one (> 0: misclassified)."""
    logits = logits.astype(jnp.float32)
    true_logit = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    wrong = jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    return wrong.max(axis=1) - true_logit


def _sorted_logits(logits: jnp.ndarray) -> jnp.ndarray:
    """Logits [B, C] in descending order per example."""
    return -jnp.sort(-logits, axis=1)


def dlr_loss(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Croce and Hein's difference of logits ratio [B]: -(z_y - max_{i != y} z_i) /
    (z_pi1 - z_pi3), invariant to shifts and scales of the logits (needs >= 3 classes)."""
    logits = logits.astype(jnp.float32)
    ranked = _sorted_logits(logits)
    return margin_loss(logits, labels) / (ranked[:, 0] - ranked[:, 2] + 1e-12)


def targeted_dlr_loss(logits: jnp.ndarray, labels: jnp.ndarray, targets: jnp.ndarray):
    """Targeted DLR [B]: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) (needs >= 4 classes)."""
    logits = logits.astype(jnp.float32)
    ranked = _sorted_logits(logits)
    true_logit = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    target_logit = jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0]
    scale = ranked[:, 0] - (ranked[:, 2] + ranked[:, 3]) / 2 + 1e-12
    return (target_logit - true_logit) / scale


ATTACK_LOSSES = {"ce": cross_entropy, "margin": margin_loss, "dlr": dlr_loss}


def pgd_step_size(epsilon, num_steps: int, step_min: float):
    """The reference step-size rule, max(eps / (steps / 2), step_min), for [B] radii or one."""
    return jnp.maximum(epsilon / (num_steps / 2), step_min)


def example_keys(key: jax.Array, stream: int, ids: jnp.ndarray) -> jax.Array:
    """One PRNG key per example [B], from a key, a stream number and the example id.

    Noise keyed by example id does not depend on how the batch is split across devices.
    """
    stream_key = jax.random.fold_in(key, stream)
    return jax.vmap(lambda example_id: jax.random.fold_in(stream_key, example_id))(ids)


def broadcast_rows(values: jnp.ndarray, images: jnp.ndarray) -> jnp.ndarray:
    """Broadcast [B] against [B, H, W, C]."""
    return values.reshape((-1,) + (1,) * (images.ndim - 1)).astype(jnp.float32)


def project(adversarial: jnp.ndarray, images: jnp.ndarray, epsilon: jnp.ndarray) -> jnp.ndarray:
    """Project onto each example's L-inf ball of radius epsilon [B], then onto [0, 1]."""
    eps = broadcast_rows(epsilon, images)
    return jnp.clip(jnp.clip(adversarial, images - eps, images + eps), 0.0, 1.0)


def random_start(images: jnp.ndarray, epsilon: jnp.ndarray, keys: jax.Array) -> jnp.ndarray:
    """Uniform start in each example's ball; `keys` [B] holds one PRNG key per example."""
    unit = jax.vmap(lambda k: jax.random.uniform(k, images.shape[1:], minval=-1.0, maxval=1.0))
    return project(images + unit(keys) * broadcast_rows(epsilon, images), images, epsilon)


def pgd_attack(
    loss_fn: LossFn,
    images: jnp.ndarray,
    labels: jnp.ndarray,
    epsilon: jnp.ndarray,
    step_size: jnp.ndarray,
    num_steps: int,
    keys: jax.Array,
    unroll: bool = False,
) -> jnp.ndarray:
    """PGD-`num_steps`: sign-gradient ascent on loss_fn from a random start, inside each ball.

    `unroll` writes the steps out one after another instead of as an XLA while loop: 5-8x
    faster on CPU (README "Performance"), at the price of a longer compile.
    """
    carrying_loss = lambda x, y, carry: (loss_fn(x, y), carry)
    adversarial, _ = pgd_attack_carrying(
        carrying_loss, images, labels, epsilon, step_size, num_steps, keys, (), unroll
    )
    return adversarial


def pgd_attack_carrying(
    loss_fn: Callable,
    images: jnp.ndarray,
    labels: jnp.ndarray,
    epsilon: jnp.ndarray,
    step_size: jnp.ndarray,
    num_steps: int,
    keys: jax.Array,
    carry,
    unroll: bool = False,
    start: jnp.ndarray | None = None,
):
    """PGD as `pgd_attack`, threading `carry` through every forward pass of the loss:
    `loss_fn(x, y, carry) -> (losses [B], new carry)`. Returns (adversarial, final carry).

    The carry is how BatchNorm running statistics follow the authors' train-mode attacks,
    updated once per attack iteration. `labels` may be any per-example target of the loss
    (TRADES passes the clean predictions); `start` replaces the uniform random start (`keys`
    are then unused).
    """
    images = images.astype(jnp.float32)
    step = broadcast_rows(step_size, images)

    def total_loss(x, carry):
        losses, new_carry = loss_fn(x, labels, carry)
        return losses.sum(), new_carry

    loss_grad = jax.grad(total_loss, has_aux=True)

    def ascend(_, state):
        adversarial, carry = state
        gradient, carry = loss_grad(adversarial, carry)
        ascended = adversarial + step * jnp.sign(gradient.astype(jnp.float32))
        return project(ascended, images, epsilon), carry

    if start is None:
        start = random_start(images, epsilon, keys)
    return jax.lax.fori_loop(0, num_steps, ascend, (start, carry), unroll=unroll)


def apgd_checkpoints(num_steps: int) -> list[tuple[int, int]]:
    """APGD's step-size reviews: (iteration, window) pairs, as Croce and Hein's code spaces
    them: the first after 22% of the iterations, each window 3% shorter, never under 6%."""
    window = max(int(0.22 * num_steps), 1)
    shrink, shortest = max(int(0.03 * num_steps), 1), max(int(0.06 * num_steps), 1)
    reviews, since = [], 0
    for iteration in range(num_steps):
        since += 1
        if since == window:
            reviews.append((iteration, window))
            since, window = 0, max(window - shrink, shortest)
    return reviews


def apgd_attack(
    logits_fn: Callable[[jnp.ndarray], jnp.ndarray],
    loss: LossFn,
    images: jnp.ndarray,
    labels: jnp.ndarray,
    epsilon: jnp.ndarray,
    num_steps: int,
    keys: jax.Array,
    unroll: bool = False,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Auto-PGD (Croce and Hein 2020) in L-inf at a radius per example [B].

    From a random start: step size 2 eps, momentum 0.75, and at each review (apgd_checkpoints)
    the step size is halved and the search restarts from the best point wherever the loss rose
    in at most 75% of the window's iterations, or the best loss has not improved since the last
    review without a halving there. `loss(logits, labels) -> [B]` is ascended. Returns (the
    adversarial: the first misclassified iterate, else the best-loss one; [B] bool: some
    iterate was misclassified).
    """
    images = images.astype(jnp.float32)
    eps = broadcast_rows(epsilon, images)
    momentum, rise_fraction = 0.75, 0.75
    reviews = apgd_checkpoints(num_steps)
    is_review = jnp.zeros(num_steps, bool).at[jnp.array([i for i, _ in reviews])].set(True)
    window = (
        jnp.zeros(num_steps)
        .at[jnp.array([i for i, _ in reviews])]
        .set(jnp.array([w for _, w in reviews], jnp.float32))
    )

    def loss_logits_grad(x):
        def total(x):
            logits = logits_fn(x)
            losses = loss(logits, labels)
            return losses.sum(), (losses, logits)

        grad, (losses, logits) = jax.grad(total, has_aux=True)(x)
        return losses, jnp.argmax(logits, axis=-1) != labels, grad.astype(jnp.float32)

    def where(flags, a, b):  # per-example choice between two [B, ...] arrays
        return jnp.where(flags.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

    start = random_start(images, epsilon, keys)
    losses, wrong, grad = loss_logits_grad(start)
    state = {
        "x": start,
        "x_prev": start,
        "grad": grad,
        "loss": losses,
        "best_x": start,
        "best_grad": grad,
        "best_loss": losses,
        "fooled": wrong,
        "fool_x": start,
        "step": 2.0 * eps,
        "rises": jnp.zeros_like(losses),
        "best_at_review": losses,
        "halved_at_review": jnp.ones_like(wrong),
    }

    def iterate(i, s):
        x, step = s["x"], s["step"]
        pull = 1.0 if num_steps == 1 else jnp.where(i == 0, 1.0, momentum)
        z = project(x + step * jnp.sign(s["grad"]), images, epsilon)
        new_x = project(x + pull * (z - x) + (1 - pull) * (x - s["x_prev"]), images, epsilon)
        losses, wrong, grad = loss_logits_grad(new_x)
        better = losses > s["best_loss"]
        s = dict(
            s,
            x=new_x,
            x_prev=x,
            grad=grad,
            loss=losses,
            best_x=where(better, new_x, s["best_x"]),
            best_grad=where(better, grad, s["best_grad"]),
            best_loss=jnp.where(better, losses, s["best_loss"]),
            fool_x=where(wrong & ~s["fooled"], new_x, s["fool_x"]),
            fooled=s["fooled"] | wrong,
            rises=s["rises"] + (losses > s["loss"]),
        )
        few_rises = s["rises"] <= rise_fraction * window[i]
        stalled = ~s["halved_at_review"] & (s["best_at_review"] >= s["best_loss"])
        halve = is_review[i] & (few_rises | stalled)
        reviewed = {
            "step": where(halve, step / 2, step),
            "x": where(halve, s["best_x"], s["x"]),
            "grad": where(halve, s["best_grad"], s["grad"]),
            "rises": jnp.zeros_like(s["rises"]),
            "best_at_review": s["best_loss"],
            "halved_at_review": halve,
        }
        return {
            k: jnp.where(is_review[i], reviewed[k], v) if k in reviewed else v for k, v in s.items()
        }

    final = jax.lax.fori_loop(0, num_steps, iterate, state, unroll=unroll)
    adversarial = where(final["fooled"], final["fool_x"], final["best_x"])
    return adversarial, final["fooled"]
