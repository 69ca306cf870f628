"""The attack BatchNorm policies: which statistics attack passes use, and how their updates
reach the training pass (the step's end-to-end checks of them are in test_step.py)."""

import jax
import numpy as np
import pytest
from test_step import B, fresh_state, one_step, random_batch

from iaat_jax import models
from iaat_jax.method import attack_batchnorm


def test_running_is_inference_mode_and_local_drops_the_mesh_axis(fast_config):
    model, state = fresh_state(fast_config)
    images = random_batch()["image"]
    fast_config.attack_batchnorm = "running"
    running = attack_batchnorm.attack_batchnorm(fast_config, model)
    logits, stats = running.forward(state.params, images, state.batch_stats)
    np.testing.assert_array_equal(logits, model.apply(state.variables, images, train=False))
    assert stats is state.batch_stats and running.settle(stats) is stats
    fast_config.update(attack_batchnorm="local", attack_batchnorm_updates=True)
    local = attack_batchnorm.attack_batchnorm(fast_config, model)
    assert model.bn_axis_name == "data" and local.model.bn_axis_name is None
    # outside a mesh, its forward is a plain train-mode pass that updates the statistics
    logits, stats = local.forward(state.params, images, state.batch_stats)
    plain = models.create_model("small_cnn", 10)
    expected = plain.apply(state.variables, images, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(logits, expected[0], atol=1e-6)
    assert not np.allclose(jax.tree.leaves(stats)[0], jax.tree.leaves(state.batch_stats)[0])
    fast_config.attack_batchnorm = "frozen"
    with pytest.raises(ValueError, match="unknown attack_batchnorm 'frozen'"):
        attack_batchnorm.attack_batchnorm(fast_config, model)


@pytest.mark.parametrize(
    "method, passes, unroll",  # unroll False: a PGD loop carries the statistics
    [("iaat", 1 + 2 * 2 + 2 + 2, True), ("iaat", 9, False), ("pgd", 2, False)],
)  # IAAT: clean check, 2 probes x 2 steps, 2 checks, training attack; PGD-AT: its attack
def test_local_batchnorm_updates_average_once_over_devices_before_the_training_pass(
    fast_config, method, passes, unroll
):
    """'local' with updates on 8 devices: each device's attack passes move its running
    statistics toward its own batch's, the step averages them once, and the training pass
    (global batch statistics) updates that average: the same statistics on every device."""
    fast_config.update(method=method, epsilon=0.0, iaat_gamma=0.0, epsilon_ramp_epochs=0)
    fast_config.update(attack_batchnorm="local", attack_batchnorm_updates=True)
    fast_config.attack_unroll = unroll
    _, state = fresh_state(fast_config)
    start = jax.tree.map(lambda x: x + 0.3, state.batch_stats)
    state = state.replace(batch_stats=start)
    batch, momentum = random_batch(), 0.9
    plain = models.create_model("small_cnn", 10)

    def statistics(rows):  # the batch statistics of `rows`, from one train-mode update
        once = plain.apply(state.variables, rows, train=True, mutable=["batch_stats"])[1]
        return jax.tree.map(
            lambda r1, r0: (r1 - momentum * r0) / (1 - momentum), once["batch_stats"], start
        )

    after_attacks = [
        jax.tree.map(
            lambda r0, s: momentum**passes * r0 + (1 - momentum**passes) * s,
            start,
            statistics(rows),
        )
        for rows in np.split(batch["image"], 8)
    ]
    averaged = jax.tree.map(lambda *leaves: np.mean(leaves, axis=0), *after_attacks)
    expected = jax.tree.map(
        lambda r, s: momentum * r + (1 - momentum) * s, averaged, statistics(batch["image"])
    )
    epoch = 5 if method == "iaat" else 0
    new_state, _, _ = one_step(fast_config, 8, epoch, np.zeros(B, np.float32), batch, state)
    for leaf, want in zip(
        jax.tree.leaves(new_state.batch_stats), jax.tree.leaves(expected), strict=True
    ):
        for shard in leaf.addressable_shards:  # every device holds the same statistics
            np.testing.assert_allclose(np.asarray(shard.data), np.asarray(want), atol=2e-5)
