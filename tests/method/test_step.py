"""The data-parallel train step: 8 devices give what 1 device gives; methods set the radius."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iaat_jax import models
from iaat_jax.method import epsilon
from iaat_jax.method import step as step_lib
from iaat_jax.run import experiment, sharding

B = 32


def fresh_state(config):
    model = experiment.create_model(config, 10)
    schedule = experiment.learning_rate_schedule(config, 10)
    state = experiment.create_train_state(model, config, (28, 28, 1), jax.random.key(0), schedule)
    return model, state


def random_batch(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.random((B, 28, 28, 1), dtype=np.float32),
        "label": rng.integers(0, 10, B).astype(np.int32),
        "id": rng.permutation(1000)[:B].astype(np.int64),
    }


def one_step(config, num_devices, epoch, eps_prev, batch=None, state=None):
    """One train step on `num_devices` devices; returns (new state, new radii, metrics)."""
    mesh = sharding.make_mesh(jax.devices()[:num_devices])
    model, fresh = fresh_state(config)
    state = fresh if state is None else state
    batch = random_batch() if batch is None else batch
    new_state, eps, metrics = step_lib.make_train_step(model, config, mesh, steps_per_epoch=10)(
        sharding.replicate(state, mesh),
        sharding.device_batch(batch, mesh),
        sharding.shard_rows(eps_prev, mesh),
        sharding.replicate(jax.random.key(1), mesh),
        epoch,
    )
    return new_state, np.asarray(eps), jax.device_get(metrics)


def assert_trees_close(tree_1, tree_8, atol=1e-5):
    leaves_1, leaves_8 = jax.tree.leaves(tree_1), jax.tree.leaves(tree_8)
    assert len(leaves_1) == len(leaves_8) > 0
    for leaf_1, leaf_8 in zip(leaves_1, leaves_8, strict=True):
        np.testing.assert_allclose(np.asarray(leaf_1), np.asarray(leaf_8), atol=atol)


@pytest.mark.parametrize(
    "method, epoch, batchnorm",
    [("iaat", 0, "running"), ("iaat", 5, "running"), ("iaat", 5, "global"), ("pgd", 0, "running")]
    + [("clean", 0, "running"), ("trades", 0, "running"), ("mart", 0, "running")]
    + [("iaat_trades", 5, "running"), ("iaat_mart", 5, "global")],
)
def test_eight_devices_match_one_device(fast_config, method, epoch, batchnorm):
    assert jax.device_count() == 8
    fast_config.method = method
    fast_config.attack_batchnorm = batchnorm  # 'global': the CIFAR config's mode, with updates
    fast_config.attack_batchnorm_updates = batchnorm == "global"
    eps_prev = np.random.default_rng(1).uniform(0, 0.15, B).astype(np.float32)
    state_1, eps_1, metrics_1 = one_step(fast_config, 1, epoch, eps_prev)
    state_8, eps_8, metrics_8 = one_step(fast_config, 8, epoch, eps_prev)
    np.testing.assert_array_equal(eps_1, eps_8)
    assert_trees_close(state_1.params, state_8.params)
    assert_trees_close(state_1.batch_stats, state_8.batch_stats)
    assert metrics_1["train_loss"] == pytest.approx(metrics_8["train_loss"], abs=1e-5)
    # the step really trained: the parameters moved away from their initial values
    model = models.create_model("small_cnn", 10)
    initial = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)["params"]
    moved = [
        np.abs(np.asarray(a) - np.asarray(b)).max()
        for a, b in zip(jax.tree.leaves(initial), jax.tree.leaves(state_8.params), strict=True)
    ]
    assert int(state_8.step) == 1 and max(moved) > 1e-4


def test_uint8_images_give_the_step_of_their_float_images_bit_for_bit(fast_config):
    batch = random_batch()
    pixels = np.random.default_rng(2).integers(0, 256, batch["image"].shape, dtype=np.uint8)
    eps_prev = np.random.default_rng(1).uniform(0, 0.15, B).astype(np.float32)
    as_uint8 = one_step(fast_config, 8, 5, eps_prev, dict(batch, image=pixels))
    as_float = one_step(fast_config, 8, 5, eps_prev, dict(batch, image=pixels / np.float32(255)))
    np.testing.assert_array_equal(as_uint8[1], as_float[1])
    for leaf_uint8, leaf_float in zip(
        *map(jax.tree.leaves, (as_uint8[0], as_float[0])), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(leaf_uint8), np.asarray(leaf_float))


def test_pgd_clean_check_is_a_metric_only_and_clean_training_reuses_its_training_pass(
    fast_config,
):
    eps_prev = np.zeros(B, np.float32)
    fast_config.method = "pgd"
    state_off, eps_off, metrics_off = one_step(fast_config, 1, 0, eps_prev)
    fast_config.pgd_clean_check = True
    state_on, eps_on, metrics_on = one_step(fast_config, 1, 0, eps_prev)
    assert "train_clean_accuracy" not in metrics_off and 0 <= metrics_on["train_clean_accuracy"]
    np.testing.assert_array_equal(eps_off, eps_on)
    assert_trees_close(state_off.params, state_on.params, atol=0)  # the step is unchanged
    fast_config.method = "clean"
    metrics = one_step(fast_config, 1, 0, eps_prev)[2]
    assert metrics["train_clean_accuracy"] == metrics["train_accuracy"]


def test_methods_set_the_radius(fast_config):
    eps_prev = np.random.default_rng(1).uniform(0, 0.15, B).astype(np.float32)
    fast_config.method = "clean"
    np.testing.assert_array_equal(one_step(fast_config, 1, 0, eps_prev)[1], eps_prev)
    fast_config.method = "pgd"  # a linear ramp over epsilon_ramp_epochs (2) x 10 steps
    eps = fast_config.epsilon
    np.testing.assert_allclose(one_step(fast_config, 1, 0, eps_prev)[1], eps / 20, rtol=1e-6)
    _, state = fresh_state(fast_config)
    for step, radius in ((9, eps / 2), (19, eps), (50, eps)):
        later = state.replace(step=step)
        new_radii = one_step(fast_config, 1, 0, eps_prev, state=later)[1]
        np.testing.assert_allclose(new_radii, radius, rtol=1e-6, err_msg=f"step {step}")
    # IAAT's warm-up ramps the same way: epsilon (ramped) where the clean check is right, else 0
    fast_config.method = "iaat"
    for step, radius in ((0, eps / 20), (9, eps / 2), (50, eps)):
        later = state.replace(step=step)
        warm = one_step(fast_config, 1, 0, eps_prev, state=later)[1]
        assert np.all(np.isclose(warm, 0) | np.isclose(warm, radius, rtol=1e-6)), step
        assert np.any(warm > 0), step
    fast_config.method, fast_config.epsilon_ramp_epochs = "pgd", 0
    np.testing.assert_allclose(one_step(fast_config, 1, 0, eps_prev)[1], eps, rtol=1e-6)


@pytest.mark.parametrize(
    "method, epoch, batchnorm, updates, probe_steps, passes",
    [  # clean check, 2 probes x 2 steps, 2 checks, attack, loss
        ("iaat", 5, "global", True, None, 3 * 2 + 4),
        ("iaat", 5, "global", True, 1, 1 + 2 * 1 + 2 + 2 + 1),  # probes of one PGD step
        ("iaat", 5, "local", True, None, 3 * 2 + 4),  # one device: its batch is the global one
        ("iaat", 0, "global", True, None, 2 + 2),  # warm-up: clean check, attack, loss
        ("pgd", 0, "global", True, None, 2 + 1),  # the authors' PGD-AT has no clean check
        ("iaat", 5, "global", False, None, 1),  # batch statistics, but only the loss updates
        ("iaat", 5, "running", False, None, 1),
    ],
)
def test_running_statistics_are_updated_once_per_train_mode_pass(
    fast_config, method, epoch, batchnorm, updates, probe_steps, passes
):
    # every radius is 0, so each pass sees the clean batch and its statistics s: after n passes
    # with momentum m the running statistics are m^n r0 + (1 - m^n) s
    fast_config.update(method=method, epsilon=0.0, iaat_gamma=0.0, epsilon_ramp_epochs=0)
    fast_config.update(attack_batchnorm=batchnorm, attack_batchnorm_updates=updates)
    fast_config.probe_steps = probe_steps
    _, state = fresh_state(fast_config)
    start = jax.tree.map(lambda x: x + 0.3, state.batch_stats)  # away from the batch's
    state = state.replace(batch_stats=start)
    batch = random_batch()
    plain = models.create_model("small_cnn", 10)
    once = plain.apply(state.variables, batch["image"], train=True, mutable=["batch_stats"])[1]
    momentum = 0.9
    batch_stats = jax.tree.map(
        lambda r1, r0: (r1 - momentum * r0) / (1 - momentum), once["batch_stats"], start
    )
    expected = jax.tree.map(
        lambda r0, s: momentum**passes * r0 + (1 - momentum**passes) * s, start, batch_stats
    )
    new_state, _, _ = one_step(fast_config, 1, epoch, np.zeros(B, np.float32), batch, state)
    assert_trees_close(new_state.batch_stats, expected, atol=2e-5)


def test_iaat_warmup_radius_is_epsilon_or_zero_and_adaptation_moves_at_most_beta_gamma(fast_config):
    fast_config.epsilon_ramp_epochs = 0  # the reference's warm-up (the ramp: the test above)
    eps_prev = np.random.default_rng(1).uniform(0, 0.15, B).astype(np.float32)
    _, warm, metrics = one_step(fast_config, 1, 0, eps_prev)
    assert np.all(np.isclose(warm, 0.0) | np.isclose(warm, fast_config.epsilon))
    assert metrics["train_clean_accuracy"] == pytest.approx(np.mean(warm > 0))
    _, adapted, _ = one_step(fast_config, 1, fast_config.iaat_warmup_epochs, eps_prev)
    step = fast_config.iaat_beta * fast_config.iaat_gamma
    grown, shrunk = adapted - eps_prev, eps_prev - adapted
    assert np.all(grown <= step + 1e-6)
    # a fall is a shrink by beta*gamma, or a decay toward 0 for a misclassified example
    assert np.all(
        (shrunk <= step + 1e-6) | np.isclose(adapted, (1 - fast_config.iaat_beta) * eps_prev)
    )


def test_attack_batchnorm_mode_decides_which_statistics_the_clean_check_uses(fast_config):
    # running statistics far from any batch's: the two modes then classify differently
    _, state = fresh_state(fast_config)
    skewed = jax.tree.map(lambda x: x + 0.7, state.batch_stats)
    state = state.replace(batch_stats=skewed)
    batch = random_batch()
    plain = models.create_model("small_cnn", 10)  # no mesh axis: statistics of this batch alone
    variables = {"params": state.params, "batch_stats": skewed}
    running = np.argmax(plain.apply(variables, batch["image"], train=False), -1)
    in_batch = np.argmax(
        plain.apply(variables, batch["image"], train=True, mutable=["batch_stats"])[0], -1
    )
    batch["label"] = running.astype(np.int32)  # every example correct under running statistics
    expected = {"running": running == running, "global": in_batch == running}
    expected["local"] = expected["global"]  # one device: its own batch is the global batch
    assert 0 < expected["global"].sum() < B  # the modes disagree on some examples, not all
    eps_prev = np.zeros(B, np.float32)
    for mode in ("running", "global", "local"):
        fast_config.attack_batchnorm = mode
        _, warm, _ = one_step(fast_config, 1, 0, eps_prev, batch=batch, state=state)
        # warm-up radius = epsilon where the clean check (in this mode) is correct, else 0
        np.testing.assert_array_equal(warm > 0, expected[mode], err_msg=mode)
    fast_config.attack_batchnorm = "global"
    _, warm_8, _ = one_step(fast_config, 8, 0, eps_prev, batch=batch, state=state)
    # 8 devices average the same global batch statistics (up to float rounding near ties)
    assert np.mean((warm_8 > 0) == expected["global"]) >= 0.9
    # 'local': each device normalises its own 4 examples with their statistics alone
    fast_config.attack_batchnorm = "local"
    per_device = np.concatenate(
        [
            np.argmax(plain.apply(variables, rows, train=True, mutable=["batch_stats"])[0], -1)
            for rows in np.split(batch["image"], 8)
        ]
    )
    assert 0 < np.sum(per_device != in_batch)  # own statistics decide other classes than global
    _, warm_local, _ = one_step(fast_config, 8, 0, eps_prev, batch=batch, state=state)
    np.testing.assert_array_equal(warm_local > 0, per_device == running)


def test_both_iaat_programs_compile_at_the_first_step_and_serve_every_later_one(fast_config):
    mesh = sharding.make_mesh(jax.devices()[:1])
    model, state = fresh_state(fast_config)
    warmup = fast_config.iaat_warmup_epochs
    fast_config.epsilon_ramp_epochs = 0  # warm-up radii: epsilon or 0
    train_step = step_lib.make_train_step(
        model, fast_config, mesh, epochs=range(warmup + 4), steps_per_epoch=10
    )
    state = sharding.replicate(state, mesh)
    batch = sharding.device_batch(random_batch(), mesh)
    key = sharding.replicate(jax.random.key(1), mesh)
    radii, programs = [], None
    for epoch in (0, 0, warmup, warmup + 3):
        eps_prev = sharding.shard_rows(np.full(B, 0.1, np.float32), mesh)
        # a compiled program refuses (raises) inputs of another type or placement instead of
        # compiling again, so every step below runs one of the two programs built at the first
        state, eps, _ = train_step(state, batch, eps_prev, key, epoch)
        programs = programs or dict(train_step.compiled)
        assert (
            set(programs) == {step_lib.WARM_UP, step_lib.MAIN} and train_step.compiled == programs
        )
        radii.append(np.asarray(eps))
    assert all(jitted._cache_size() == 0 for jitted in train_step.jitted.values())
    assert np.all(np.isclose(radii[1], 0) | np.isclose(radii[1], fast_config.epsilon))  # warm-up
    # adaptation: a move of at most beta * gamma, or the decay of a misclassified example
    moved = np.abs(radii[2] - 0.1) <= fast_config.iaat_beta * fast_config.iaat_gamma + 1e-6
    assert np.all(moved | np.isclose(radii[2], (1 - fast_config.iaat_beta) * 0.1))
    assert not np.allclose(radii[2], radii[1])


class TwoClassLinear(nn.Module):
    """Logits = flattened image @ W + b over two classes: robustness at a radius is known."""

    @nn.compact
    def __call__(self, images, train: bool):
        del train
        return nn.Dense(2)(images.reshape(images.shape[0], -1))


def linear_model_and_state(config):
    """TwoClassLinear and its initial train state for 28 x 28 x 1 images."""
    model = TwoClassLinear()
    schedule = experiment.learning_rate_schedule(config, 10)
    return model, experiment.create_train_state(
        model, config, (28, 28, 1), jax.random.key(3), schedule
    )


def linear_oracle(params, images, labels):
    """Margin of each example's label at the worst point of its ball of radius r (float64):
    the corner clip(x + r * sign(w_other - w_label), 0, 1), which PGD reaches on a two-class
    linear model (its input gradient has that sign everywhere)."""
    kernel = np.asarray(params["Dense_0"]["kernel"], np.float64)
    bias = np.asarray(params["Dense_0"]["bias"], np.float64)
    flat = images.reshape(len(images), -1).astype(np.float64)
    towards_label = kernel[:, labels].T - kernel[:, 1 - labels].T  # [B, D]
    offset = bias[labels] - bias[1 - labels]

    def margin(radius):
        worst = np.clip(flat - np.asarray(radius)[:, None] * np.sign(towards_label), 0.0, 1.0)
        return (worst * towards_label).sum(-1) + offset

    return margin


def breaking_radius(margin, count: int) -> np.ndarray:
    """The radius [B] at which each correctly classified example's worst margin reaches 0."""
    low, high = np.zeros(count), np.ones(count)
    for _ in range(60):
        middle = (low + high) / 2
        robust = margin(middle) > 0
        low, high = np.where(robust, middle, low), np.where(robust, high, middle)
    return low


@pytest.mark.parametrize("num_devices", [1, 8])
def test_the_iaat_step_applies_the_rule_to_the_true_robustness_of_each_example(
    fast_config, num_devices
):
    """Warm-up and adaptation on a linear model whose robustness at any radius is known: the
    step's radii equal the rule applied to the clean check and both probes, example by
    example (swapped probes, a probe at the wrong radius or the wrong clean mask would not)."""
    fast_config.update(iaat_gamma=0.01, iaat_beta=0.3, epsilon=0.05, epsilon_ramp_epochs=0)
    model, state = linear_model_and_state(fast_config)
    rng = np.random.default_rng(4)
    images = rng.random((B, 28, 28, 1), dtype=np.float32)
    flat = images.reshape(B, -1).astype(np.float64)
    kernel = np.asarray(state.params["Dense_0"]["kernel"], np.float64)
    bias = np.asarray(state.params["Dense_0"]["bias"], np.float64)
    predicted = np.argmax(flat @ kernel + bias, -1)
    labels = np.where(np.arange(B) % 8 == 7, 1 - predicted, predicted).astype(np.int32)
    margin = linear_oracle(state.params, images, labels)
    clean_correct = margin(np.zeros(B)) > 0
    assert 0 < clean_correct.sum() < B
    # radii that put each correct example clearly in one of the rule's three cases
    case = np.arange(B) % 3  # 0: broken at eps_prev, 1: robust there only, 2: robust at both
    gamma = fast_config.iaat_gamma
    eps_prev = breaking_radius(margin, B) + np.array([0.5, -0.5, -1.5])[case] * gamma
    eps_prev = np.maximum(eps_prev, 0.0).astype(np.float32)
    robust_prev, robust_high = margin(eps_prev) > 0, margin(eps_prev + gamma) > 0
    for chosen in (0, 1, 2):
        assert np.any(clean_correct & (case == chosen) & (eps_prev > 0))
    batch = {"image": images, "label": labels, "id": np.arange(B, dtype=np.int64)}
    mesh = sharding.make_mesh(jax.devices()[:num_devices])
    train_step = step_lib.make_train_step(model, fast_config, mesh, steps_per_epoch=10)
    args = (
        sharding.device_batch(batch, mesh),
        sharding.shard_rows(eps_prev, mesh),
        sharding.replicate(jax.random.key(1), mesh),
    )

    _, warm, _ = train_step(sharding.replicate(state, mesh), *args, 0)
    np.testing.assert_allclose(np.asarray(warm), 0.05 * clean_correct, atol=1e-7)

    _, adapted, _ = train_step(
        sharding.replicate(state, mesh), *args, fast_config.iaat_warmup_epochs
    )
    expected = epsilon.adapted_radius(
        eps_prev, clean_correct, robust_prev, robust_high, gamma=gamma, beta=0.3
    )
    np.testing.assert_allclose(np.asarray(adapted), np.asarray(expected), atol=1e-6)
