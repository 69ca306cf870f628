"""Orbax checkpoints: state, table, key and meta come back as saved; a mismatch is clear."""

import shutil

import jax
import numpy as np
import pytest
from conftest import load_config

from iaat_jax import errors
from iaat_jax.errors import CheckpointError
from iaat_jax.run import experiment, sharding
from iaat_jax.run.checkpoint import Checkpointer


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
    with pytest.raises(errors.ConfigError, match="checkpoint at step 1 does not fit"):
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


def flaky_reads(checkpoints, monkeypatch, error: Exception, failures: int) -> list[str]:
    """The first `failures` reads raise `error`; returns the list of steps each read asked."""
    real_restore, asked = checkpoints._reader.restore, []

    def restore(directory, *args, **kwargs):
        asked.append(directory.name)
        if len(asked) <= failures:
            raise error
        return real_restore(directory, *args, **kwargs)

    monkeypatch.setattr(checkpoints._reader, "restore", restore)
    return asked


def listing(tmp_path):
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))


@pytest.mark.parametrize(
    "error",
    [
        OSError(5, "Input/output error"),
        TimeoutError("read timed out"),
        ConnectionResetError(104, "Connection reset by peer"),
        ValueError("UNAVAILABLE: GCS returned 503 for gs://bucket/run/checkpoints/7/state"),
        PermissionError(13, "Permission denied"),
    ],
    ids=["eio", "timeout", "reset", "tensorstore-503", "permission"],
)
def test_a_read_error_is_retried_and_the_newest_checkpoint_resumes_with_nothing_moved(
    tmp_path, monkeypatch, error
):
    save_two(tmp_path)
    before = listing(tmp_path)
    checkpoints = Checkpointer(tmp_path, max_to_keep=3, retry_seconds=0.0)
    asked = flaky_reads(checkpoints, monkeypatch, error, failures=2)
    state, table, _, _ = checkpoints.restore_newest(fresh_state(1), num_train=50)
    checkpoints.close()
    assert int(state.step) == 7 and np.all(table == 7)
    assert asked == ["7", "7", "7"]  # two failed reads of the newest, then it read back
    assert listing(tmp_path) == before


def test_a_lasting_read_error_stops_with_one_line_and_moves_nothing(tmp_path, monkeypatch):
    save_two(tmp_path)
    before = listing(tmp_path)
    checkpoints = Checkpointer(tmp_path, max_to_keep=3, read_attempts=3, retry_seconds=0.0)
    asked = flaky_reads(checkpoints, monkeypatch, OSError(5, "Input/output error"), 99)
    with pytest.raises(CheckpointError) as error:
        checkpoints.restore_newest(fresh_state(1), num_train=50)
    message = str(error.value)
    assert "\n" not in message and "reading checkpoint 7" in message and "3 times" in message
    assert "Input/output error" in message and "nothing was moved" in message
    assert asked == ["7", "7", "7"]  # never on to an older checkpoint
    monkeypatch.undo()
    checkpoints.close()
    assert listing(tmp_path) == before


def test_a_workdir_whose_checkpoints_are_all_damaged_is_not_started_again(tmp_path):
    newest = save_two(tmp_path)
    damage_by_garbage(newest)
    damage_by_emptying(newest.parent / "3")
    before = listing(tmp_path)
    checkpoints = Checkpointer(tmp_path, max_to_keep=3)
    with pytest.raises(CheckpointError, match=r"every checkpoint .* is damaged \(steps 7, 3;"):
        checkpoints.restore_newest(fresh_state(1), num_train=50)
    checkpoints.close()
    assert listing(tmp_path) == before


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg", "unsafe_rbg"])
def test_keys_of_every_implementation_round_trip(tmp_path, impl):
    key = jax.random.fold_in(jax.random.key(5, impl=impl), 3)
    checkpoints = Checkpointer(tmp_path, max_to_keep=2)
    checkpoints.save(1, fresh_state(0), np.zeros(5, np.float32), key, {"epoch": 0})
    _, _, restored, meta = checkpoints.restore_newest(fresh_state(0), num_train=5)
    checkpoints.close()
    assert meta == {"epoch": 0}
    assert str(jax.random.key_impl(restored)) == impl
    np.testing.assert_array_equal(jax.random.key_data(restored), jax.random.key_data(key))
    np.testing.assert_array_equal(  # the same stream continues
        jax.random.uniform(jax.random.fold_in(restored, 9), (4,)),
        jax.random.uniform(jax.random.fold_in(key, 9), (4,)),
    )


@pytest.mark.parametrize("saved_on, restored_on", [(8, 1), (1, 8), (8, 2)])
def test_a_checkpoint_restores_bit_exactly_onto_another_device_count(
    tmp_path, saved_on, restored_on
):
    def on(devices, state):
        mesh = sharding.make_mesh(jax.devices()[:devices])
        return sharding.replicate(jax.device_get(state), mesh)

    saved = on(saved_on, fresh_state(3).replace(step=11))
    table = np.random.default_rng(1).random(50).astype(np.float32)
    checkpoints = Checkpointer(tmp_path, max_to_keep=2)
    checkpoints.save(11, saved, table, jax.random.key(4), {})
    state, values, _, _ = checkpoints.restore_newest(on(restored_on, fresh_state(0)), 50)
    checkpoints.close()
    np.testing.assert_array_equal(values, table)
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(saved), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert len(got.sharding.device_set) == restored_on
