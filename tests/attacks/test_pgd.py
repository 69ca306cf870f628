"""Per-example-radius PGD: stays in each ball and in [0, 1], eps 0 is a no-op, raises the loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iaat_jax import models
from iaat_jax.attacks import pgd
from iaat_jax.attacks.pgd import cross_entropy, example_keys

B, D, CLASSES = 16, 6, 3


def linear_problem(seed=0):
    rng = np.random.default_rng(seed)
    weights = jnp.asarray(rng.normal(size=(D * D, CLASSES)).astype(np.float32))
    images = jnp.asarray(rng.random((B, D, D, 1), dtype=np.float32))
    labels = jnp.asarray(rng.integers(0, CLASSES, B).astype(np.int32))

    def loss_fn(x, y):
        return cross_entropy(x.reshape(x.shape[0], -1) @ weights, y)

    return loss_fn, images, labels


def run_pgd(loss_fn, images, labels, radius, steps=10, step_min=0.0):
    radius = jnp.asarray(radius, jnp.float32)
    keys = example_keys(jax.random.key(0), 0, jnp.arange(images.shape[0]))
    size = pgd.pgd_step_size(radius, steps, step_min)
    return jax.jit(pgd.pgd_attack, static_argnums=(0, 5))(
        loss_fn, images, labels, radius, size, steps, keys
    )


def test_every_example_stays_inside_its_own_ball_and_the_pixel_range():
    loss_fn, images, labels = linear_problem()
    radius = np.linspace(0.0, 0.5, B).astype(np.float32)
    adversarial = np.asarray(run_pgd(loss_fn, images, labels, radius, step_min=2 / 255))
    distance = np.abs(adversarial - np.asarray(images)).reshape(B, -1).max(axis=1)
    assert np.all(distance <= radius + 1e-6)
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    # the larger radii are actually used, so the bound above is not trivially loose
    assert np.all(distance[radius > 0.1] > 0.5 * radius[radius > 0.1])


def test_zero_radius_leaves_the_input_unchanged_even_with_a_minimum_step():
    loss_fn, images, labels = linear_problem()
    adversarial = run_pgd(loss_fn, images, labels, np.zeros(B), step_min=2 / 255)
    np.testing.assert_array_equal(np.asarray(adversarial), np.asarray(images))


def test_attack_raises_the_loss_of_every_example():
    loss_fn, images, labels = linear_problem()
    adversarial = run_pgd(loss_fn, images, labels, np.full(B, 0.1))
    before, after = loss_fn(images, labels), loss_fn(adversarial, labels)
    assert np.all(np.asarray(after) > np.asarray(before))


def test_attack_beats_its_random_start():
    loss_fn, images, labels = linear_problem()
    radius = jnp.full(B, 0.1)
    keys = example_keys(jax.random.key(0), 0, jnp.arange(B))
    start = pgd.random_start(images, radius, keys)
    adversarial = run_pgd(loss_fn, images, labels, radius)
    assert loss_fn(adversarial, labels).sum() > loss_fn(start, labels).sum()


def test_random_start_of_an_example_does_not_depend_on_its_batch():
    _, images, _ = linear_problem()
    radius = jnp.full(B, 0.2)
    keys = example_keys(jax.random.key(3), 1, jnp.arange(B))
    whole = pgd.random_start(images, radius, keys)
    half = pgd.random_start(images[8:], radius[8:], keys[8:])
    np.testing.assert_array_equal(np.asarray(whole[8:]), np.asarray(half))


@pytest.mark.parametrize(
    "eps, steps, step_min, expected", [(8 / 255, 10, 2 / 255, 2 / 255), (0.4, 10, 0.01, 0.08)]
)
def test_step_size_rule(eps, steps, step_min, expected):
    size = pgd.pgd_step_size(jnp.float32([eps]), steps, step_min)
    assert float(size[0]) == pytest.approx(expected, rel=1e-6)


def test_the_unrolled_attack_computes_what_the_loop_computes():
    loss_fn, images, labels = linear_problem()
    radius = jnp.linspace(0.0, 0.3, B)
    size = pgd.pgd_step_size(radius, 5, 0.01)
    keys = example_keys(jax.random.key(0), 0, jnp.arange(B))
    run = jax.jit(pgd.pgd_attack, static_argnums=(0, 5, 7))
    looped = run(loss_fn, images, labels, radius, size, 5, keys, False)
    unrolled = run(loss_fn, images, labels, radius, size, 5, keys, True)
    np.testing.assert_allclose(np.asarray(unrolled), np.asarray(looped), atol=1e-6)
    assert float(jnp.abs(looped - images).max()) > 0.1  # the attack moved the inputs


def test_apgd_reviews_its_step_size_where_croce_and_hein_place_the_checkpoints():
    # p_0 = 0, p_1 = 0.22, p_(j+1) = p_j + max(p_j - p_(j-1) - 0.03, 0.06): reviews after 22,
    # 41, 57, 70, 80, 87, 93 and 99 of 100 iterations
    reviews = pgd.apgd_checkpoints(100)
    assert [iteration + 1 for iteration, _ in reviews] == [22, 41, 57, 70, 80, 87, 93, 99]
    assert [window for _, window in reviews] == [22, 19, 16, 13, 10, 7, 6, 6]


@pytest.mark.parametrize("loss", ["ce", "dlr", "dlr_targeted"])
def test_apgd_stays_inside_each_ball_and_beats_its_random_start(loss):
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.random((B, 28, 28, 1), dtype=np.float32))
    eps = jnp.asarray(rng.uniform(0.0, 0.02, B).astype(np.float32))
    model = models.create_model("small_cnn", 10)
    variables = model.init(jax.random.key(0), images, train=False)
    logits_fn = lambda x: model.apply(variables, x, train=False)
    labels = jnp.argmax(logits_fn(images), axis=-1)  # every example starts correct
    targets = jnp.argsort(-logits_fn(images), axis=-1)[:, 1]
    loss_fn = {
        "ce": pgd.cross_entropy,
        "dlr": pgd.dlr_loss,
        "dlr_targeted": lambda z, y: pgd.targeted_dlr_loss(z, y, targets),
    }[loss]
    keys = pgd.example_keys(jax.random.key(1), 0, jnp.arange(B))
    adversarial, fooled = pgd.apgd_attack(logits_fn, loss_fn, images, labels, eps, 20, keys)
    distance = jnp.abs(adversarial - images).reshape(B, -1).max(axis=1)
    assert bool(jnp.all(distance <= eps + 1e-6))
    assert float(adversarial.min()) >= 0.0 and float(adversarial.max()) <= 1.0
    start = pgd.random_start(images, eps, keys)
    gained = loss_fn(logits_fn(adversarial), labels) - loss_fn(logits_fn(start), labels)
    # the returned point is the best one found (or a misclassified one), never below the start
    assert bool(jnp.all((gained >= -1e-6) | fooled))
    assert 0 < int(fooled.sum()) < B and float(gained[~fooled].min()) > 0
