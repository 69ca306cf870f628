"""The public AutoAttack API on plain-JAX models (no Flax): exact against brute force over the
ball's corners and FAB's closed-form distance, a radius per example equal to one call per
radius, 2 devices equal to 1, and a break is counted only once a fresh forward pass confirms
it (an attack forged to report what is not there is refused)."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO
from linear_oracle import brute_force_robust

from iaat_jax import robustness
from iaat_jax.attacks import pgd
from iaat_jax.attacks.autoattack import SuiteAttack

SHAPE = (2, 2, 1)  # 4 pixels: the 16 corners of every ball can be enumerated


def linear_problem(seed: int, classes: int = 4, count: int = 64, shape=SHAPE):
    """logits = flattened image @ W + b in plain jax.numpy, images, and its own predictions."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(int(np.prod(shape)), classes)).astype(np.float32)
    bias = rng.normal(size=classes).astype(np.float32) * 0.1
    logits_fn = lambda x: x.reshape(x.shape[0], -1) @ weights + bias
    images = rng.random((count, *shape), dtype=np.float32)
    labels = np.asarray(jnp.argmax(logits_fn(images), -1))
    return logits_fn, weights, bias, images, labels


def test_the_apgd_suite_finds_exactly_the_brute_force_breaks_and_returns_them():
    logits_fn, weights, bias, images, labels = linear_problem(0)
    for eps in (0.05, 0.15):
        expected = brute_force_robust(weights, bias, images, labels, eps).astype(bool)
        result = robustness.autoattack(logits_fn, images, labels, eps, suite="apgd", batch_size=32)
        assert 0 < expected.mean() < 1  # both kinds of example at this radius
        np.testing.assert_array_equal(result.robust, expected)
        assert result.robust_accuracy == pytest.approx(expected.mean())
        broken = ~result.robust
        # each returned break: inside its ball (float32 arithmetic) and [0, 1], misclassified
        distance = np.abs(result.adversarial - images).reshape(len(images), -1).max(axis=1)
        assert np.all(distance[broken] <= eps + 1e-6) and result.adversarial.min() >= 0.0
        assert np.all(np.argmax(logits_fn(result.adversarial), -1)[broken] != labels[broken])
        np.testing.assert_array_equal(result.adversarial[~broken], images[~broken])
        assert set(result.broken_by[broken]) <= {"apgd-ce", "apgd-t"}
        assert set(result.broken_by[~broken]) == {""}
        assert result.checks["unconfirmed_breaks"] == 0
        assert result.robustbench["robust_acc_after"]["apgd-t"] == pytest.approx(expected.mean())


def test_fab_breaks_exactly_the_examples_within_the_closed_form_distance():
    # two classes: the L-inf distance to the boundary is |margin| / ||w_1 - w_0||_1 (images near
    # 0.5 and small distances, so the box [0, 1] does not bind)
    logits_fn, weights, bias, images, labels = linear_problem(1, classes=2, shape=(6, 6, 1))
    images = 0.5 + 0.02 * (images - 0.5)
    labels = np.asarray(jnp.argmax(logits_fn(images), -1))
    flat = images.reshape(len(images), -1)
    margin = np.abs(flat @ (weights[:, 1] - weights[:, 0]) + bias[1] - bias[0])
    distance = margin / np.abs(weights[:, 1] - weights[:, 0]).sum()
    eps = float(np.median(distance))
    clear = np.abs(distance - eps) > 1e-4  # not decided by float rounding
    result = robustness.autoattack(
        logits_fn, images, labels, eps, suite=(SuiteAttack("fab-t", 50, 1),), checks=False
    )
    np.testing.assert_array_equal(result.robust[clear], (distance > eps)[clear])
    assert result.broken_by[~result.robust].tolist() == ["fab-t"] * int((~result.robust).sum())


def test_a_radius_per_example_equals_one_call_per_radius_and_two_devices_equal_one():
    logits_fn, _, _, images, labels = linear_problem(2)
    radii = np.array([0.03, 0.08, 0.2])[np.arange(len(images)) % 3]
    ids = np.arange(len(images)) + 1000
    together = robustness.autoattack(
        logits_fn, images, labels, radii, suite="smoke", ids=ids, batch_size=16
    )
    apart = np.zeros(len(images), bool)
    for radius in np.unique(radii):
        rows = np.flatnonzero(radii == radius)
        one = robustness.autoattack(
            logits_fn, images[rows], labels[rows], radius, suite="smoke", ids=ids[rows]
        )
        apart[rows] = one.robust
    np.testing.assert_array_equal(together.robust, apart)
    assert 0 < together.robust_accuracy < 1 and together.robustbench["eps"] is None
    flags = [
        robustness.autoattack(
            logits_fn, images, labels, radii, suite="smoke", ids=ids, devices=jax.devices()[:n]
        )
        for n in (1, 2)
    ]
    np.testing.assert_array_equal(flags[0].robust, flags[1].robust)
    np.testing.assert_array_equal(flags[0].adversarial, flags[1].adversarial)


def test_weights_passed_as_variables_give_what_a_closure_gives():
    logits_fn, weights, bias, images, labels = linear_problem(3)
    apply = lambda params, x: x.reshape(x.shape[0], -1) @ params["w"] + params["b"]
    params = {"w": weights, "b": bias}
    closure = robustness.autoattack(logits_fn, images, labels, 0.1, suite="smoke")
    passed = robustness.autoattack(apply, images, labels, 0.1, suite="smoke", variables=params)
    assert 0 < closure.robust_accuracy < 1
    np.testing.assert_array_equal(closure.robust, passed.robust)


def test_a_break_an_attack_reports_counts_only_if_a_fresh_forward_pass_confirms_it(monkeypatch):
    logits_fn, weights, bias, images, labels = linear_problem(4)
    eps = 0.05
    expected = brute_force_robust(weights, bias, images, labels, eps).astype(bool)
    # a forged attack: every example "fooled" at the all-white image, outside most balls

    def forged(logits_fn, loss, attacked, attacked_labels, epsilon, steps, keys, unroll=False):
        return jnp.ones_like(attacked), jnp.ones(len(attacked), bool)

    monkeypatch.setattr(pgd, "apgd_attack", forged)
    result = robustness.autoattack(
        logits_fn, images, labels, eps, suite=(SuiteAttack("apgd-ce", 5),), checks=False
    )
    assert result.robust[expected].all()  # no robust example is counted broken
    assert result.checks["unconfirmed_breaks"] >= expected.sum() > 0
    broken = ~result.robust
    assert np.all(np.argmax(logits_fn(result.adversarial), -1)[broken] != labels[broken])


@pytest.mark.parametrize(
    "images, labels, epsilon, suite, message",
    [
        (np.zeros((4, 2, 2)), np.zeros(4), 0.1, "apgd", r"give \[N, H, W, C\]"),
        (np.zeros((4, 2, 2, 1)), np.zeros(3), 0.1, "apgd", "one label per image"),
        (np.full((4, 2, 2, 1), 255.0), np.zeros(4), 0.1, "apgd", r"outside \[0, 1\]"),
        (np.zeros((4, 2, 2, 1)), np.zeros(4), -0.1, "apgd", "finite and >= 0"),
        (np.zeros((4, 2, 2, 1)), np.zeros(4), [0.1, 0.2], "apgd", "one per example"),
        (np.zeros((4, 2, 2, 1)), np.zeros(4), 0.1, "auto", "unknown suite 'auto'"),
        (np.zeros((0, 2, 2, 1)), np.zeros(0), 0.1, "apgd", "no images"),
        (np.full((4, 2, 2, 1), np.nan), np.zeros(4), 0.1, "apgd", r"outside \[0, 1\]"),
        (np.zeros((4, 2, 2, 1)), np.zeros(4), 0.1, (SuiteAttack("pgd", 5),), "SuiteAttacks named"),
        (np.zeros((4, 2, 2, 1)), np.zeros(4), 0.1, (), "SuiteAttacks named"),
    ],
)
def test_bad_input_is_one_clear_error(images, labels, epsilon, suite, message):
    logits_fn = lambda x: x.reshape(x.shape[0], -1)
    with pytest.raises(ValueError, match=message):
        robustness.autoattack(logits_fn, images, labels, epsilon, suite=suite)
    with pytest.raises(ValueError, match="one id in"):
        robustness.autoattack(logits_fn, np.zeros((4, 2, 2, 1)), np.zeros(4), ids=np.arange(3))


def test_importing_the_api_needs_no_tensorflow():
    code = "import sys, iaat_jax.robustness; print('tensorflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
