"""MART: its loss is the paper's formula; on a two-class linear model the step trains on it at
the worst corner of each ball, at the fixed radius (MART) or at the radius IAAT's rule gives
(IAAT-MART, IAAT-TRADES); 8 devices give what 1 device gives (tests/method/test_step.py)."""

import jax
import numpy as np
import pytest
from test_step import B, breaking_radius, linear_model_and_state, linear_oracle

from iaat_jax.method import epsilon, mart
from iaat_jax.method import step as step_lib
from iaat_jax.run import sharding


def softmax(logits):
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def papers_loss(clean_logits, adversarial_logits, labels, beta, constants=True):
    """[B] in float64: -log p'_y - log(1 - max_{k != y} p'_k) + beta * KL(p || p') * (1 - p_y),
    p = softmax(f(x)), p' = softmax(f(x')) (Wang et al., eq. 8), per example; `constants`: the
    authors' small constants inside the logs and the weight."""
    tiny, boost, weight_one = (1e-12, 1.0001, 1.0000001) if constants else (0.0, 1.0, 1.0)
    p, q = softmax(clean_logits), softmax(adversarial_logits)
    rows = np.arange(len(labels))
    others = q.copy()
    others[rows, labels] = -1.0
    boosted = -np.log(q[rows, labels]) - np.log(boost - others.max(-1) + tiny)
    kl = (p * (np.log(p) - np.log(q + tiny))).sum(-1)
    return boosted + beta * kl * (weight_one - p[rows, labels])


def test_the_loss_is_the_papers_formula():
    rng = np.random.default_rng(0)
    clean, adversarial = rng.normal(0, 3, (16, 10)), rng.normal(0, 3, (16, 10))
    labels = rng.integers(0, 10, 16)
    for beta in (0.0, 1.0, 6.0):
        ours = np.asarray(mart.mart_loss(clean, adversarial, labels, beta), np.float64)
        np.testing.assert_allclose(ours, papers_loss(clean, adversarial, labels, beta), rtol=1e-5)
        # the authors' constants move the loss by little
        plain = papers_loss(clean, adversarial, labels, beta, constants=False)
        np.testing.assert_allclose(ours, plain, rtol=2e-3)


def linear_setup(config, method, seed=4):
    model, state = linear_model_and_state(config)
    rng = np.random.default_rng(seed)
    images = rng.random((B, 28, 28, 1), dtype=np.float32)
    labels = rng.integers(0, 2, B).astype(np.int32)
    kernel = np.asarray(state.params["Dense_0"]["kernel"], np.float64)
    bias = np.asarray(state.params["Dense_0"]["bias"], np.float64)
    return model, state, images, labels, kernel, bias


def corner_logits(images, labels, radius, kernel, bias):
    """Logits at clip(x + r * sign(w_other - w_label), 0, 1): where PGD on the cross-entropy
    goes on a two-class linear model from any start, with a step of 1."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    away = np.sign(kernel[:, 1 - labels].T - kernel[:, labels].T)
    return np.clip(flat + np.asarray(radius)[:, None] * away, 0.0, 1.0) @ kernel + bias


def run_step(model, state, config, images, labels, eps_prev, epoch, num_devices=1):
    mesh = sharding.make_mesh(jax.devices()[:num_devices])
    batch = {"image": images, "label": labels, "id": np.arange(len(labels), dtype=np.int64)}
    train_step = step_lib.make_train_step(model, config, mesh, steps_per_epoch=10)
    _, radii, metrics = train_step(
        sharding.replicate(state, mesh),
        sharding.device_batch(batch, mesh),
        sharding.shard_rows(np.asarray(eps_prev, np.float32), mesh),
        sharding.replicate(jax.random.key(1), mesh),
        epoch,
    )
    return np.asarray(radii), jax.device_get(metrics)


@pytest.mark.parametrize("beta", [0.0, 6.0])
def test_the_step_trains_on_the_papers_loss_at_the_worst_corner(fast_config, beta):
    """MART's attack (cross-entropy from a Gaussian start) lands on the worst corner of each
    ball whatever the start; the training loss is the mean paper's loss there."""
    fast_config.update(
        method="mart", mart_beta=beta, epsilon=0.05, epsilon_ramp_epochs=0,
        attack_steps=3, attack_step_min=1.0,
    )  # fmt: skip
    model, state, images, labels, kernel, bias = linear_setup(fast_config, "mart")
    clean_logits = images.reshape(B, -1).astype(np.float64) @ kernel + bias
    at_corner = corner_logits(images, labels, np.full(B, 0.05), kernel, bias)
    expected = papers_loss(clean_logits, at_corner, labels, beta).mean()
    radii, metrics = run_step(model, state, fast_config, images, labels, np.zeros(B), 0)
    np.testing.assert_allclose(radii, 0.05)
    assert float(metrics["train_loss"]) == pytest.approx(expected, rel=1e-5)
    # the corner matters: the loss at the clean point is another number
    assert abs(papers_loss(clean_logits, clean_logits, labels, beta).mean() - expected) > 1e-3
    clean_accuracy = np.mean(np.argmax(clean_logits, -1) == labels)
    assert float(metrics["train_clean_accuracy"]) == pytest.approx(clean_accuracy)


@pytest.mark.parametrize("method", ["iaat_mart", "iaat_trades"])
def test_iaats_rule_sets_the_radius_the_objectives_attack_runs_at(fast_config, method):
    """IAAT-MART and IAAT-TRADES: the radii are the rule applied to the clean check and the
    cross-entropy probes, example by example (as IAAT's own); IAAT-MART's training loss is the
    paper's loss at the worst corner of each example's adapted ball, not of eps_prev's."""
    fast_config.update(
        method=method, iaat_gamma=0.01, iaat_beta=0.3, epsilon=0.05, epsilon_ramp_epochs=0,
        attack_step_min=1.0, mart_beta=6.0,
    )  # fmt: skip
    model, state, images, labels, kernel, bias = linear_setup(fast_config, method)
    predicted = np.argmax(images.reshape(B, -1).astype(np.float64) @ kernel + bias, -1)
    labels = np.where(np.arange(B) % 8 == 7, 1 - predicted, predicted).astype(np.int32)
    margin = linear_oracle(state.params, images, labels)
    clean_correct = margin(np.zeros(B)) > 0
    case = np.arange(B) % 3  # 0: broken at eps_prev, 1: robust there only, 2: robust at both
    eps_prev = breaking_radius(margin, B) + np.array([0.5, -0.5, -1.5])[case] * 0.01
    eps_prev = np.maximum(eps_prev, 0.0).astype(np.float32)
    robust_prev, robust_high = margin(eps_prev) > 0, margin(eps_prev + 0.01) > 0
    expected = np.asarray(
        epsilon.adapted_radius(
            eps_prev, clean_correct, robust_prev, robust_high, gamma=0.01, beta=0.3
        )
    )
    radii, metrics = run_step(
        model, state, fast_config, images, labels, eps_prev, fast_config.iaat_warmup_epochs
    )
    np.testing.assert_allclose(radii, expected, atol=1e-6)
    assert not np.allclose(expected, eps_prev, atol=1e-4)  # the rule moved the radii
    if method == "iaat_mart":
        clean_logits = images.reshape(B, -1).astype(np.float64) @ kernel + bias
        adapted = papers_loss(
            clean_logits, corner_logits(images, labels, expected, kernel, bias), labels, 6.0
        ).mean()
        previous = papers_loss(
            clean_logits, corner_logits(images, labels, eps_prev, kernel, bias), labels, 6.0
        ).mean()
        assert float(metrics["train_loss"]) == pytest.approx(adapted, rel=1e-4)
        assert abs(adapted - previous) > 1e-4
