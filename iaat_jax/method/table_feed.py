"""The host table and the device step, overlapped: gather by id -> step -> scatter by id.

`TableFeed.step` gathers a batch's radii from the host table, dispatches the jitted step, and
only then writes back the radii of the step before it, so the device is never idle while the
host gathers, scatters and transfers. Exactness: ids are unique within an epoch, so only a batch
that shares ids with the step still in flight (the end of one epoch and the start of the next)
must wait for that step's radii; `step` then writes them back before it gathers.
"""

import time
from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh

from iaat_jax.data.datasets import Batch
from iaat_jax.errors import NonFiniteError
from iaat_jax.method.epsilon import EpsilonTable
from iaat_jax.run import sharding


class TableFeed:
    """Runs train steps over host batches, keeping the host epsilon table exact.

    Times the host's own work (gather, transfer, scatter) in `host_seconds`; time spent waiting
    for the device is not host work and is not counted.
    """

    def __init__(self, train_step: Callable, table: EpsilonTable, mesh: Mesh, key: jax.Array):
        self.train_step, self.table, self.mesh, self.key = train_step, table, mesh, key
        self._in_flight = None  # (ids, new radii, metrics, step number) of the step in flight
        self.host_seconds = {"gather": 0.0, "transfer": 0.0, "scatter": 0.0}

    def step(self, state, batch: Batch, epoch: int, step: int = -1) -> tuple:
        """Dispatch train step number `step` on `batch`; returns (new state, metrics) on device.

        The write-back of the step before checks its loss and radii: NonFiniteError if either
        is NaN or infinite (the table then keeps its last finite radii).
        """
        ids = np.asarray(batch["id"])
        if self._in_flight is not None and np.isin(ids, self._in_flight[0]).any():
            self.flush()  # an id of this batch is still being updated: wait for its radius
        started = time.perf_counter()
        eps_prev = self.table.gather(ids)
        gathered = time.perf_counter()
        inputs = sharding.device_batch(batch, self.mesh)
        eps_prev = sharding.shard_rows(eps_prev, self.mesh)
        self.host_seconds["gather"] += gathered - started
        self.host_seconds["transfer"] += time.perf_counter() - gathered
        state, new_eps, metrics = self.train_step(state, inputs, eps_prev, self.key, epoch)
        previous, self._in_flight = self._in_flight, (ids, new_eps, metrics, step)
        if previous is not None:
            self._write_back(*previous)
        return state, metrics

    def flush(self) -> None:
        """Write back the radii of the step in flight (waits for it)."""
        if self._in_flight is not None:
            self._write_back(*self._in_flight)
            self._in_flight = None

    def _write_back(self, ids: np.ndarray, new_eps: jax.Array, metrics: dict, step: int) -> None:
        new_eps.block_until_ready()  # waiting for the device is not host work
        started = time.perf_counter()
        radii = sharding.local_rows(new_eps)
        loss = float(metrics["train_loss"]) if "train_loss" in metrics else 0.0
        if not (np.isfinite(loss) and np.isfinite(radii).all()):
            what = f"the loss is {loss}" if not np.isfinite(loss) else "a radius is not finite"
            raise NonFiniteError(f"{what} at step {step + 1}")
        self.table.scatter(ids, radii)
        self.host_seconds["scatter"] += time.perf_counter() - started
