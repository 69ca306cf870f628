"""The host table and the device step overlapped: exact radii, and the write-back off the path."""

import jax
import numpy as np

from iaat_jax.method.epsilon import EpsilonTable
from iaat_jax.method.table_feed import TableFeed
from iaat_jax.run import sharding


def counting_step(calls):
    """A stand-in train step: each visit adds 1 to an example's radius; records the table."""

    @jax.jit
    def add_one(eps_prev):
        return eps_prev + 1.0

    def train_step(state, inputs, eps_prev, key, epoch):
        calls.append(np.asarray(sharding.local_rows(inputs["id"])))
        return state + 1, add_one(eps_prev), {}

    return train_step


def batch_of(ids):
    ids = np.asarray(ids, np.int64)
    return {
        "image": np.zeros((len(ids), 2, 2, 1), np.float32),
        "label": np.zeros(len(ids), np.int32),
        "id": ids,
    }


def test_radii_stay_exact_when_consecutive_batches_share_ids():
    mesh = sharding.make_mesh()
    table = EpsilonTable(40)
    calls = []
    feed = TableFeed(counting_step(calls), table, mesh, key=None)
    rng = np.random.default_rng(0)
    epochs = [rng.permutation(40) for _ in range(3)]
    # batches of 8 from three epochs back to back: the last batch of one epoch and the first
    # of the next may share ids, which must read the radius the previous step wrote
    batches = [ids[i : i + 8] for ids in epochs for i in range(0, 40, 8)]
    batches.insert(5, epochs[0][32:])  # the same ids twice in a row, at once
    state = 0
    for ids in batches:
        state, _ = feed.step(state, batch_of(ids), epoch=None)
    feed.flush()
    visits = np.bincount(np.concatenate(batches), minlength=40)
    np.testing.assert_array_equal(table.values, visits.astype(np.float32))
    assert state == len(batches)


def test_the_next_step_is_dispatched_before_the_previous_radii_are_written_back():
    mesh = sharding.make_mesh()
    table = EpsilonTable(16)
    snapshots = []
    calls = []
    inner = counting_step(calls)

    def watching_step(state, inputs, eps_prev, key, epoch):
        snapshots.append(table.values.copy())  # what the host table held at dispatch
        return inner(state, inputs, eps_prev, key, epoch)

    feed = TableFeed(watching_step, table, mesh, key=None)
    feed.step(0, batch_of(range(0, 8)), epoch=None)
    feed.step(1, batch_of(range(8, 16)), epoch=None)
    assert not snapshots[1].any()  # step 2 went out before step 1's radii came back
    np.testing.assert_array_equal(table.values[:8], 1.0)  # ...and then they were written
    assert not table.values[8:].any()  # step 2 is still in flight
    feed.flush()
    np.testing.assert_array_equal(table.values, 1.0)
    assert set(feed.host_seconds) == {"gather", "transfer", "scatter"}
