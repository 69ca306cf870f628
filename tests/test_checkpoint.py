"""Orbax checkpoints: state, table, key and meta come back as saved; a mismatch is clear."""

import jax
import numpy as np
import pytest
from conftest import load_config

from iaat_jax import config_checks, experiment, sharding
from iaat_jax.checkpoint import Checkpointer


def fresh_state(seed):
    config = load_config()
    model = experiment.create_model(config, 10)
    schedule = experiment.learning_rate_schedule(config, 10)
    state = experiment.create_train_state(
        model, config, (28, 28, 1), jax.random.key(seed), schedule
    )
    return sharding.replicate(state, sharding.make_mesh())


def test_a_saved_step_restores_exactly_and_the_newest_wins(tmp_path):
    saved = fresh_state(0).replace(step=7)
    table = np.random.default_rng(0).random(50).astype(np.float32)
    key = jax.random.key(42)
    checkpoints = Checkpointer(tmp_path, max_to_keep=2)
    assert checkpoints.latest_step() is None
    checkpoints.save(3, fresh_state(1), np.zeros(50, np.float32), jax.random.key(1), {"epoch": 0})
    checkpoints.save(7, saved, table, key, {"epoch": 1, "dataset": "mnist5k"})
    checkpoints.wait()
    checkpoints.close()

    reopened = Checkpointer(tmp_path, max_to_keep=2)
    assert reopened.latest_step() == 7
    state, values, restored_key, meta = reopened.restore(fresh_state(2), num_train=50)
    reopened.close()
    assert int(state.step) == 7 and meta == {"epoch": 1, "dataset": "mnist5k"}
    np.testing.assert_array_equal(values, table)
    np.testing.assert_array_equal(jax.random.key_data(restored_key), jax.random.key_data(key))
    for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(saved.params), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert (
        len(state.params["Dense_0"]["kernel"].addressable_shards) == 8
    )  # placed like the template


def test_max_to_keep_deletes_the_oldest(tmp_path):
    checkpoints = Checkpointer(tmp_path, max_to_keep=2)
    for step in (1, 2, 3):
        checkpoints.save(step, fresh_state(0), np.zeros(5, np.float32), jax.random.key(0), {})
        checkpoints.wait()
    checkpoints.close()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "3"]


def test_a_checkpoint_of_another_table_size_is_a_clear_error(tmp_path):
    checkpoints = Checkpointer(tmp_path, max_to_keep=2)
    checkpoints.save(1, fresh_state(0), np.zeros(50, np.float32), jax.random.key(0), {})
    checkpoints.wait()
    with pytest.raises(config_checks.ConfigError, match="checkpoint at step 1 does not fit"):
        checkpoints.restore(fresh_state(0), num_train=60)
    checkpoints.close()
