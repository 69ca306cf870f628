"""Square: on a linear model it breaks the examples that brute force says are breakable, and
only those, and it never leaves an example's ball."""

import jax
import jax.numpy as jnp
import numpy as np

from iaat_jax.attacks import pgd, square


def test_square_breaks_what_the_worst_corner_breaks_and_stays_in_each_ball():
    rng = np.random.default_rng(1)
    batch, side, classes = 64, 8, 4
    # smooth weights (low spatial frequencies), as image models have, so windows matter
    rows, cols = np.mgrid[0:side, 0:side] / side
    weights = np.stack(
        [np.sin(np.pi * (k + 1) * cols + k) + np.cos(np.pi * rows * (k % 2 + 1)) for k in range(4)],
        -1,
    ).reshape(side * side, classes)
    weights = (0.3 * weights).astype(np.float32)
    model = lambda x: x.reshape(x.shape[0], -1) @ weights
    images = rng.random((batch, side, side, 1)).astype(np.float32)
    labels = np.argmax(model(images), -1)
    epsilon = rng.uniform(0.1, 0.6, size=batch).astype(np.float32)  # a radius per example
    # the worst case of a linear model in a box is a corner: for each wrong class, move every
    # pixel by eps towards it (clipped to [0, 1])
    worst = np.full(batch, -np.inf)  # the largest z_t - z_y anywhere in the ball
    for i in range(batch):
        for target in set(range(classes)) - {labels[i]}:
            towards = np.sign(weights[:, target] - weights[:, labels[i]])
            corner = np.clip(images[i].reshape(-1) + epsilon[i] * towards, 0, 1)
            worst[i] = max(worst[i], corner @ (weights[:, target] - weights[:, labels[i]]))
    breakable = worst >= 0
    assert 0.2 < breakable.mean() < 0.8  # both kinds of example are present
    clean = np.sort(model(images), axis=1)
    clearly = worst > 0.15 * (clean[:, -1] - clean[:, -2])  # beyond 15% of the clean margin
    keys = pgd.example_keys(jax.random.key(0), 0, jnp.arange(batch))
    attack = jax.jit(lambda x, e: square.square_attack(model, x, labels, e, 5000, keys))
    adversarial, fooled = map(np.asarray, attack(jnp.asarray(images), jnp.asarray(epsilon)))
    assert not np.any(fooled & ~breakable)  # it cannot break what the ball does not allow
    # a random search need not find a corner that is only just over the boundary
    assert fooled[breakable].mean() >= 0.9 and np.all(fooled[clearly])
    distance = np.abs(adversarial - images).reshape(batch, -1).max(1)
    assert np.all(distance <= epsilon + 1e-6)
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    # what it reports as broken is misclassified at the point it returns
    np.testing.assert_array_equal(np.argmax(model(adversarial), -1) != labels, fooled)


def test_the_window_shrinks_on_autoattacks_schedule():
    # 28 x 28: p = 0.8 gives sides of 25 pixels, halved shares from query 11, 51, 201, ...
    sides = [int(square.window_side(q, 28, 28)) for q in (0, 10, 11, 51, 201, 501, 4001, 4999)]
    expected = [round(np.sqrt(0.8 / d * 784)) for d in (1, 1, 2, 4, 8, 16, 128, 128)]
    assert sides == expected
