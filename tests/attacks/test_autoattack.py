"""The AutoAttack suite: exact on linear models, survivors-only equals attacking everyone, 8
devices give what 1 gives, and Square catches what masked gradients hide."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from linear_oracle import SHAPE, Linear, brute_force_robust

from iaat_jax.attacks import autoattack, sanity
from iaat_jax.attacks.autoattack import SuiteAttack
from iaat_jax.run import sharding


def linear_problem(seed: int, count: int = 64, classes: int = 4, shape=SHAPE):
    """A linear classifier, images it classifies (labels = its predictions), its params."""
    rng = np.random.default_rng(seed)
    images = rng.random((count, *shape), dtype=np.float32)
    model = Linear(num_classes=classes)
    params = model.init(jax.random.key(seed), jnp.zeros((1, *shape)), train=False)["params"]
    logits = model.apply({"params": params}, images, train=False)
    labels = np.asarray(jnp.argmax(logits, -1)).astype(np.int32)
    return model, params, autoattack.Examples(images, labels, np.arange(count)), labels


def run(model, params, examples, suite, eps, num_devices=1, start=None, batch=32, classes=4):
    """run_suite on `num_devices` devices from `start` (default: every example robust)."""
    mesh = sharding.make_mesh(jax.devices()[:num_devices])
    variables = sharding.replicate({"params": params}, mesh)
    start = np.ones(len(examples.label), bool) if start is None else start
    classify = autoattack.flax_classifier(model)
    outcome = autoattack.run_suite(
        classify, variables, mesh, examples, start, suite, eps, jax.random.key(3), batch, classes
    )
    return outcome.robust, outcome.attacks


@pytest.mark.parametrize("num_devices", [1, 8])
def test_targeted_apgd_reaches_the_brute_force_worst_case_on_a_linear_model(num_devices):
    model, params, examples, labels = linear_problem(4)
    weights, bias = np.asarray(params["Dense_0"]["kernel"]), np.asarray(params["Dense_0"]["bias"])
    found_any = False
    for eps in (0.02, 0.05, 0.1, 0.2):
        expected = brute_force_robust(weights, bias, examples.image, labels, eps)
        ce, _ = run(model, params, examples, (SuiteAttack("apgd-ce", 20),), eps, num_devices)
        targeted, rows = run(
            model, params, examples, (SuiteAttack("apgd-t", 20, 3),), eps, num_devices
        )
        # no attack beats the optimum; aimed at every wrong class, targeted DLR reaches it
        # (CE alone need not: with 4 classes its ascent can aim at the wrong class)
        assert np.all(ce >= expected) and np.all(targeted >= expected)
        np.testing.assert_array_equal(targeted, expected.astype(bool))
        assert rows[0]["robust_accuracy"] == pytest.approx(expected.mean())
        found_any |= 0 < expected.mean() < 1
    assert found_any  # the radii span easy and hard cases


def test_fab_t_breaks_exactly_the_examples_within_their_radius_on_a_linear_model():
    model, params, examples, labels = linear_problem(5, shape=(6, 6, 1))
    examples.image[:] = 0.5 + 0.02 * (examples.image - 0.5)  # closest points inside the box
    weights, bias = np.asarray(params["Dense_0"]["kernel"]), np.asarray(params["Dense_0"]["bias"])
    logits = examples.image.reshape(64, -1) @ weights + bias
    labels = examples.label[:] = np.argmax(logits, -1)  # what the model predicts
    rows = np.arange(64)
    gaps = logits[rows, labels][:, None] - logits
    norms = np.abs(weights.T[labels][:, None, :] - weights.T[None, :, :]).sum(-1)
    norms[rows, labels] = 1.0
    gaps[rows, labels] = np.inf
    distance = (gaps / norms).min(axis=1)  # the closed-form distance to the nearest class
    eps = float(np.median(distance))
    robust, _ = run(model, params, examples, (SuiteAttack("fab-t", 100, 3),), eps)
    # FAB lands within 1% of the optimum: examples clearly inside or outside are decided
    clear = np.abs(distance - eps) > 0.01 * eps
    np.testing.assert_array_equal(robust[clear], distance[clear] > eps)


def test_the_suite_on_survivors_equals_each_attack_on_everyone_on_1_and_8_devices():
    # on masked gradients Square, with few queries, breaks a noise-dependent share: its
    # outcome depends on each example's noise, which must follow the example wherever the
    # survivors put it in a batch (a third count as misclassified clean, so positions move)
    model, params, examples, eps = masked_problem()
    start = np.arange(64) % 3 != 0
    suite = (
        SuiteAttack("apgd-ce", 5),
        SuiteAttack("apgd-t", 5, 3),
        SuiteAttack("fab-t", 5, 3),
        SuiteAttack("square", 30),
    )
    alone = [run(model, params, examples, (a,), eps, start=start, batch=16)[0] for a in suite]
    cascade, rows = run(model, params, examples, suite, eps, start=start, batch=16)
    np.testing.assert_array_equal(cascade, np.logical_and.reduce(alone))
    on_eight, _ = run(model, params, examples, suite, eps, 8, start=start, batch=16)
    np.testing.assert_array_equal(on_eight, cascade)
    assert 0 < cascade.mean() and rows[-1]["broken"] > 0 and not np.any(cascade & ~start)
    accuracies = [r["robust_accuracy"] for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)  # each attack only removes
    assert accuracies[-1] <= accuracies[1]  # the whole suite is never above APGD alone
    assert sum(r["broken"] for r in rows) == start.sum() - cascade.sum()


class RoundedLinear(nn.Module):
    """A linear classifier of inputs rounded to quarters: the rounding's gradient is zero."""

    @nn.compact
    def __call__(self, images, train: bool):
        del train
        rounded = jnp.round(images * 4) / 4
        return nn.Dense(4)(rounded.reshape(images.shape[0], -1))


def masked_problem():
    """A classifier with zero input gradients and 64 examples Square can break, the white-box
    attacks (nearly) not; and the radius that does it."""
    rng = np.random.default_rng(7)
    shape = (8, 8, 1)
    model = RoundedLinear()
    params = model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False)["params"]
    weights = np.asarray(params["Dense_0"]["kernel"])
    # eps just above an eighth: each pixel that moves by eps rounds to the next quarter
    eps = 0.13
    pool = (rng.integers(1, 4, size=(512, *shape)) / 4).astype(np.float32)  # on the grid
    logits = np.asarray(model.apply({"params": params}, pool, train=False))
    labels = logits.argmax(-1)
    # keep examples that no 4 rounded pixels can break (a random start rounds about 2.6 of
    # the 64 to a neighbour) but that moving all of them, as Square's corners do, breaks
    differences = np.abs(weights[:, labels].T[:, None, :] - weights.T[None, :, :]) / 4
    margins = logits[np.arange(512), labels][:, None] - logits
    others = np.arange(4)[None, :] != labels[:, None]
    safe = np.all(~others | (margins > np.sort(differences, -1)[..., -4:].sum(-1)), axis=1)
    breakable = np.any(others & (margins < 0.5 * differences.sum(-1)), axis=1)
    chosen = np.flatnonzero(safe & breakable)[:64]
    assert len(chosen) == 64
    examples = autoattack.Examples(pool[chosen], labels[chosen].astype(np.int32), np.arange(64))
    return model, params, examples, eps


def test_square_breaks_what_masked_gradients_hide_and_the_checks_say_so():
    model, params, examples, eps = masked_problem()
    white_box = (
        SuiteAttack("apgd-ce", 20),
        SuiteAttack("apgd-t", 20, 3),
        SuiteAttack("fab-t", 20, 3),
    )
    robust, _ = run(model, params, examples, white_box, eps)
    assert robust.mean() > 0.9  # zero gradients: only a rare random start breaks one
    _, rows = run(model, params, examples, white_box + (SuiteAttack("square", 500),), eps)
    assert rows[-1]["broken"] > 32  # Square breaks most of them
    assert sanity.square_check(rows[-1]["broken"], 64)["gradient_masking_suspected"]
    mesh = sharding.make_mesh(jax.devices()[:1])
    variables = sharding.replicate({"params": params}, mesh)
    batch = {"image": examples.image, "label": examples.label, "id": examples.id}
    classify = autoattack.flax_classifier(model)
    checks = sanity.model_checks(classify, variables, mesh, batch, np.ones(64))
    assert checks["zero_gradient_examples"] == 64 and not checks["randomness_suspected"]
