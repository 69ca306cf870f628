"""TRADES: its loss is the paper's formula, and the train step trains on it at the worst point
of each ball of a linear model; 8 devices give what 1 device gives (tests/method/test_step.py)."""

import itertools

import jax
import numpy as np
import pytest
from test_step import linear_model_and_state

from iaat_jax.method import step as step_lib
from iaat_jax.method import trades
from iaat_jax.run import sharding


def softmax(logits):
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def papers_loss(clean_logits, adversarial_logits, labels, beta):
    """[B] in float64: CE(f(x), y) + beta * sum_c p_c log(p_c / q_c), p = softmax(f(x)),
    q = softmax(f(x')): Zhang et al.'s objective, per example."""
    p, q = softmax(clean_logits), softmax(adversarial_logits)
    cross_entropy = -np.log(p[np.arange(len(labels)), labels])
    return cross_entropy + beta * (p * np.log(p / q)).sum(-1)


def test_the_loss_is_the_papers_formula():
    rng = np.random.default_rng(0)
    clean, adversarial = rng.normal(0, 3, (16, 10)), rng.normal(0, 3, (16, 10))
    labels = rng.integers(0, 10, 16)
    for beta in (0.0, 1.0, 6.0):
        ours = trades.trades_loss(clean, adversarial, labels, beta)
        np.testing.assert_allclose(ours, papers_loss(clean, adversarial, labels, beta), rtol=1e-5)
    # the KL term is zero at the clean point and the divergence of p from q, not of q from p
    np.testing.assert_allclose(trades.kl_divergence(clean, clean), 0.0, atol=1e-6)
    p, q = softmax(clean), softmax(adversarial)
    np.testing.assert_allclose(
        trades.kl_divergence(clean, adversarial), (p * np.log(p / q)).sum(-1), rtol=1e-5
    )


def test_the_attack_starts_from_small_gaussian_noise_around_each_image_unprojected():
    """The authors' start: x + 0.001 * N(0, 1) per pixel, one stream of noise per example key,
    not clipped to [0, 1]. (On the linear models of the step test below only the sign of the
    noise's projection matters, so its scale and law are pinned here.)"""
    images = np.zeros((3, 64, 64, 1), np.float32)
    images[1] = 1.0
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(np.arange(3))
    start = np.asarray(trades.gaussian_start(images, keys), np.float64)
    noise = start - images
    assert noise.std() == pytest.approx(0.001, rel=0.02) and abs(noise.mean()) < 2e-5
    kurtosis = np.mean((noise / noise.std()) ** 4)
    assert kurtosis == pytest.approx(3.0, abs=0.15)  # Gaussian (a uniform start's would be 1.8)
    assert start[0].min() < 0.0 and start[1].max() > 1.0  # not projected into the box
    assert not np.allclose(noise[0], noise[2])  # each example its own noise
    again = np.asarray(trades.gaussian_start(images, keys), np.float64)
    np.testing.assert_array_equal(again, start)


@pytest.mark.parametrize("beta", [0.0, 2.0])
def test_the_step_trains_on_the_papers_loss_at_a_corner_of_each_ball(fast_config, beta):
    """A two-class linear model: PGD on the KL term with a step of 1 lands, after its first step,
    on a corner clip(x +- eps * sign(w_1 - w_0), 0, 1) and stays there (the KL term is convex
    along w_1 - w_0); which corner depends on the start's noise. The step's training loss is
    the mean of the paper's loss at one of the 2^B choices of corners (beta 0: the clean
    cross-entropy), its clean accuracy that of the clean logits."""
    batch_size = 6
    fast_config.update(
        method="trades", trades_beta=beta, epsilon=0.05, epsilon_ramp_epochs=0,
        attack_steps=3, attack_step_min=1.0,
    )  # fmt: skip
    model, state = linear_model_and_state(fast_config)
    rng = np.random.default_rng(4)
    images = rng.random((batch_size, 28, 28, 1), dtype=np.float32)
    labels = rng.integers(0, 2, batch_size).astype(np.int32)
    kernel = np.asarray(state.params["Dense_0"]["kernel"], np.float64)
    bias = np.asarray(state.params["Dense_0"]["bias"], np.float64)
    flat = images.reshape(batch_size, -1).astype(np.float64)
    direction = np.sign(kernel[:, 1] - kernel[:, 0])
    clean_logits = flat @ kernel + bias
    corners = [np.clip(flat + s * 0.05 * direction, 0.0, 1.0) @ kernel + bias for s in (1, -1)]
    at_corner = [papers_loss(clean_logits, c, labels, beta) for c in corners]  # 2 x [B]
    candidates = np.array(
        [
            np.mean([at_corner[c][i] for i, c in enumerate(choice)])
            for choice in itertools.product((0, 1), repeat=batch_size)
        ]
    )
    mesh = sharding.make_mesh(jax.devices()[:1])
    batch = {"image": images, "label": labels, "id": np.arange(batch_size, dtype=np.int64)}
    train_step = step_lib.make_train_step(model, fast_config, mesh, steps_per_epoch=10)
    losses = []
    for seed in (1, 2, 3):  # the start's noise, and with it the corners, differ per key
        _, radii, metrics = train_step(
            sharding.replicate(state, mesh),
            sharding.device_batch(batch, mesh),
            sharding.shard_rows(np.zeros(batch_size, np.float32), mesh),
            sharding.replicate(jax.random.key(seed), mesh),
            0,
        )
        np.testing.assert_allclose(np.asarray(radii), 0.05)
        losses.append(loss := float(metrics["train_loss"]))
        assert np.min(np.abs(candidates - loss)) < 1e-5, (loss, candidates.min(), candidates.max())
    if beta == 0.0:  # every choice is the clean cross-entropy
        assert np.ptp(candidates) < 1e-12
    else:  # the KL term counts, and the attack ascends it from the noise (PGD on the
        # cross-entropy would reach the same corners whatever the noise)
        clean_only = papers_loss(clean_logits, clean_logits, labels, 0.0).mean()
        assert min(losses) > clean_only + 1e-3 and np.ptp(losses) > 1e-4
    clean_accuracy = np.mean(np.argmax(clean_logits, -1) == labels)
    assert float(metrics["train_clean_accuracy"]) == pytest.approx(clean_accuracy)
