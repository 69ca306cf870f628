"""Orbax checkpoints: state, table, key and meta come back as saved; a mismatch is clear."""

import shutil

import jax
import numpy as np
import pytest
from conftest import load_config

from iaat_jax import config_checks, experiment, sharding
from iaat_jax.checkpoint import Checkpointer, CheckpointError


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
    checkpoints.close()

    reopened = Checkpointer(tmp_path, max_to_keep=2)
    assert reopened.latest_step() == 7
    state, values, restored_key, meta = reopened.restore_newest(fresh_state(2), num_train=50)
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
    checkpoints.close()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "3"]


def test_a_checkpoint_of_another_table_size_is_a_clear_error(tmp_path):
    checkpoints = Checkpointer(tmp_path, max_to_keep=2)
    checkpoints.save(1, fresh_state(0), np.zeros(50, np.float32), jax.random.key(0), {})
    with pytest.raises(config_checks.ConfigError, match="checkpoint at step 1 does not fit"):
        checkpoints.restore_newest(fresh_state(0), num_train=60)
    checkpoints.close()


def save_two(tmp_path):
    """Checkpoints 3 and 7 (the newest) with tables of 3s and 7s."""
    checkpoints = Checkpointer(tmp_path, max_to_keep=3)
    for step in (3, 7):
        table = np.full(50, step, np.float32)
        checkpoints.save(step, fresh_state(0).replace(step=step), table, jax.random.key(0), {})
    checkpoints.close()
    return tmp_path / "checkpoints" / "7"


def damage_by_garbage(newest):
    for path in newest.rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "ocdbt" in str(path):
            path.write_bytes(b"garbage" * 10)


def damage_by_truncation(newest):
    for path in newest.rglob("*"):
        if path.is_file() and path.stat().st_size > 16:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def damage_by_deletion(newest):
    for path in (newest / "state").rglob("*"):
        if path.is_file() and "manifest" in path.name:
            path.unlink()


def damage_by_emptying(newest):
    shutil.rmtree(newest)
    newest.mkdir()


@pytest.mark.parametrize(
    "damage",
    [damage_by_garbage, damage_by_truncation, damage_by_deletion, damage_by_emptying],
)
def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(tmp_path, damage, caplog):
    damage(save_two(tmp_path))
    checkpoints = Checkpointer(tmp_path, max_to_keep=3)
    with caplog.at_level("WARNING"):
        state, table, _, _ = checkpoints.restore_newest(fresh_state(1), num_train=50)
    assert int(state.step) == 3 and np.all(table == 3)
    # a later save of step 7 is not blocked by the damaged one, which was set aside, not deleted
    checkpoints.save(7, state, table, jax.random.key(0), {})
    checkpoints.close()
    assert (tmp_path / "checkpoints_unreadable" / "7").is_dir()
    assert "checkpoint 7" in caplog.text and "falling back" in caplog.text


def test_a_failed_save_is_one_error_and_the_older_checkpoint_stays(tmp_path, monkeypatch):
    save_two(tmp_path)
    checkpoints = Checkpointer(tmp_path, max_to_keep=2)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints._manager, "save", disk_full)
    with pytest.raises(CheckpointError) as error:
        checkpoints.save(9, fresh_state(0), np.zeros(50, np.float32), jax.random.key(0), {})
    assert "saving checkpoint 9" in str(error.value) and "checkpoint 7 is intact" in str(
        error.value
    )
    assert "No space left on device" in str(error.value) and "\n" not in str(error.value)
    monkeypatch.undo()
    checkpoints.close()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["3", "7"]
