"""What a config builds: the optimizer it names, the schedule, the dtype, the fresh state."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import load_config

from iaat_jax.run import experiment


def one_update(config, params, grads):
    optimizer = experiment.create_optimizer(config, optax.constant_schedule(0.1))
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return optax.apply_updates(params, updates)


def test_the_optimizer_field_picks_sgd_or_adamw():
    config = load_config()
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    grads = {"w": jnp.array([0.5, 0.001, -4.0])}
    config.optimizer, config.weight_decay = "sgd", 0.01
    # SGD, coupled decay: w - lr * (g + wd * w) (momentum has no history at the first step)
    expected_sgd = params["w"] - 0.1 * (grads["w"] + 0.01 * params["w"])
    np.testing.assert_allclose(one_update(config, params, grads)["w"], expected_sgd, rtol=1e-6)
    config.optimizer = "adamw"
    # Adam's first step moves each weight by lr * sign(g), whatever |g|; decay is decoupled
    expected_adamw = params["w"] - 0.1 * (jnp.sign(grads["w"]) + 0.01 * params["w"])
    np.testing.assert_allclose(one_update(config, params, grads)["w"], expected_adamw, rtol=1e-4)


def test_piecewise_schedule_decays_at_the_epoch_boundaries_after_the_warm_up():
    config = load_config()
    config.update(lr_schedule="piecewise", lr_boundaries=(2, 4), lr_decay=0.1, lr_warmup_epochs=1)
    schedule = experiment.learning_rate_schedule(config, steps_per_epoch=10)
    assert float(schedule(0)) == 0.0 and float(schedule(5)) == pytest.approx(0.025)
    assert float(schedule(19)) == pytest.approx(0.05)
    assert float(schedule(21)) == pytest.approx(0.005)
    assert float(schedule(41)) == pytest.approx(0.0005)


def test_half_precision_defaults_to_float32_on_cpu():
    config = load_config()
    assert jax.default_backend() == "cpu" and experiment.compute_dtype(config) == jnp.float32
    config.half_precision = True
    assert experiment.compute_dtype(config) == jnp.bfloat16


def test_the_fresh_state_holds_float32_parameters_statistics_and_variables():
    config = load_config()
    model = experiment.create_model(config, 10)
    schedule = experiment.learning_rate_schedule(config, 10)
    state = experiment.create_train_state(model, config, (28, 28, 1), jax.random.key(0), schedule)
    assert int(state.step) == 0 and state.batch_stats
    assert state.variables == {"params": state.params, "batch_stats": state.batch_stats}
    assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
