"""Orbax checkpoints in <workdir>/checkpoints: train state, epsilon table, RNG key, meta.

Saves are asynchronous: `save` returns once the state is copied off the devices and the files
are written in the background; `wait` blocks until they are committed (CheckpointError if they
are not), and `saving` says whether a save is still being written. Orbax writes into a temporary
directory and renames it when complete, so a kill mid-save leaves the previous checkpoint as the
newest. Orbax deletes the oldest checkpoints only after a newer one is complete.

Reading tells damage from a failed read (`read_failure`): a checkpoint that is provably damaged
(files missing, truncated or garbage) is moved to <workdir>/checkpoints_unreadable/ once an older
one reads back whole; a read error (I/O, network, permissions, anything not provably damage) is
retried with backoff and, if it lasts, stops the run with one line and moves nothing. A workdir
whose checkpoints are all damaged is never silently started again from step 0. On several hosts
every host reads on its own (no orbax barrier a failed host could leave the others in) and all
take the decision of the worst outcome among them.
"""

import json
import re
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from iaat_jax.errors import CheckpointError, ConfigError

READ_OK, READ_DAMAGED, READ_ERROR = 0, 1, 2
# tensorstore's status codes (the prefix of its errors) that say the bytes are not a checkpoint
_DAMAGE_CODES = {"DATA_LOSS", "NOT_FOUND", "INVALID_ARGUMENT", "OUT_OF_RANGE"}
_IO_CODES = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "CANCELLED"}
READ_ATTEMPTS, RETRY_SECONDS = 4, 2.0  # a failed read is retried after 2, 4 and 8 s


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def _chain(error: BaseException) -> list[BaseException]:
    seen = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def read_failure(error: BaseException) -> int:
    """READ_DAMAGED if `error` proves the checkpoint's files are damaged, else READ_ERROR.

    Damage: a file that is missing (FileNotFoundError, tensorstore NOT_FOUND, an item orbax
    cannot find), bytes that do not parse (JSON, tensorstore DATA_LOSS, ...). A read error: any
    OSError but a missing file (timeouts, connection resets, EIO, permissions), tensorstore's
    UNAVAILABLE / DEADLINE_EXCEEDED / ..., and anything else: only proof of damage moves files.
    """
    damaged = False
    for cause in _chain(error):
        code = re.match(r"^([A-Z_]+):", str(cause))
        code = code.group(1) if code else None
        if code in _IO_CODES or isinstance(cause, TimeoutError | ConnectionError):
            return READ_ERROR
        if isinstance(cause, FileNotFoundError | NotADirectoryError | json.JSONDecodeError):
            damaged = True
        elif isinstance(cause, OSError):
            return READ_ERROR
        elif code in _DAMAGE_CODES or isinstance(cause, KeyError):
            damaged = True
        elif isinstance(cause, ValueError) and "incomplete checkpoint" in str(cause):
            damaged = True
    return READ_DAMAGED if damaged else READ_ERROR


def _worst_on_any_host(outcome: int) -> tuple[int, list[int]]:
    """(the worst outcome of all hosts, the hosts that had it): every host decides alike."""
    if jax.process_count() == 1:
        return outcome, [0]
    outcomes = np.asarray(multihost_utils.process_allgather(np.int32(outcome)))
    worst = int(outcomes.max())
    return worst, [int(i) for i in np.flatnonzero(outcomes == worst)]


class Checkpointer:
    """Saves and restores (state, epsilon table, key, meta) by global step."""

    def __init__(
        self,
        workdir,
        max_to_keep: int | None,
        read_attempts: int | None = None,
        retry_seconds: float | None = None,
    ):
        self._workdir = epath.Path(workdir)
        self._directory = self._workdir / "checkpoints"
        self._manager = ocp.CheckpointManager(
            self._directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )
        me = jax.process_index()  # reads are per host: no barrier that a failed read skips
        self._reader = ocp.Checkpointer(
            ocp.CompositeCheckpointHandler(),
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"read{me}"
            ),
        )
        self.read_attempts = read_attempts or READ_ATTEMPTS
        self.retry_seconds = RETRY_SECONDS if retry_seconds is None else retry_seconds
        self._saving_step: int | None = None

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, table: np.ndarray, key: jax.Array, meta: dict) -> None:
        """Start saving `step` (after any save still being written has committed)."""
        self.wait()
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    host=ocp.args.StandardSave(
                        {
                            "epsilon_table": np.array(table),  # a copy: the loop goes on
                            "key_data": np.asarray(jax.random.key_data(key)),
                        }
                    ),
                    meta=ocp.args.JsonSave({**meta, "key_impl": str(jax.random.key_impl(key))}),
                ),
                force=True,
            )
        except Exception as error:  # disk full, permissions, network: all end the same way
            raise self._save_error(step, error) from error
        self._saving_step = step

    @property
    def saving(self) -> bool:
        """Whether a save started by `save` is still being written."""
        return self._saving_step is not None and self._manager.is_saving_in_progress()

    def wait(self) -> int | None:
        """Wait for the save in progress; the step it committed (None if there was none)."""
        step, self._saving_step = self._saving_step, None
        if step is None:
            return None
        try:
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as error:
            raise self._save_error(step, error) from error
        return step

    def _save_error(self, step: int, error: BaseException) -> CheckpointError:
        self._manager.reload()
        previous = [s for s in self._manager.all_steps() if s < step]
        kept = f"checkpoint {max(previous)} is intact" if previous else "no older checkpoint"
        return CheckpointError(
            f"saving checkpoint {step} in {self._directory} failed ({_first_line(error)}); "
            f"{kept}: fix the cause (e.g. free disk space) and rerun to resume"
        )

    def _read(self, step: int, state_template: Any, num_train: int):
        abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
        restored = self._reader.restore(
            self._directory / str(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                host=ocp.args.StandardRestore(),  # as saved: the key's shape is its impl's
                meta=ocp.args.JsonRestore(),
            ),
        )
        host, meta = restored["host"], dict(restored["meta"])
        key = jax.random.wrap_key_data(
            np.asarray(host["key_data"], np.uint32), impl=meta.pop("key_impl", "threefry2x32")
        )
        return restored["state"], np.asarray(host["epsilon_table"], np.float32), key, meta

    def _read_agreed(self, step: int, state_template: Any, num_train: int):
        """(READ_OK, checkpoint) or (READ_DAMAGED, error line); every host gets the same
        outcome. A read error is retried; if it lasts, CheckpointError (nothing is moved)."""
        for attempt in range(self.read_attempts):
            try:
                result, outcome = self._read(step, state_template, num_train), READ_OK
            except Exception as error:  # noqa: BLE001  (sorted by read_failure)
                result, outcome = _first_line(error), read_failure(error)
            worst, hosts = _worst_on_any_host(outcome)
            if worst != READ_ERROR:
                break
            where = result if outcome == READ_ERROR else f"a read error on host(s) {hosts}"
            if attempt + 1 == self.read_attempts:
                raise CheckpointError(
                    f"reading checkpoint {step} in {self._directory} failed "
                    f"{self.read_attempts} times ({where}); nothing was moved: fix the storage "
                    "or network and rerun to resume from it"
                )
            delay = self.retry_seconds * 2**attempt
            logging.warning(
                "reading checkpoint %d failed (%s): retrying in %.0f s", step, where, delay
            )
            time.sleep(delay)
        if worst == READ_DAMAGED:
            return READ_DAMAGED, result if outcome == READ_DAMAGED else f"damaged on {hosts}"
        table = result[1]
        if num_train is not None and table.shape != (num_train,):  # orbax restores as saved
            raise ConfigError(
                f"checkpoint at step {step} does not fit this config: its epsilon table has "
                f"{table.shape[0]} examples, this dataset {num_train}; use a fresh --workdir, "
                "or the config that wrote it"
            )
        return READ_OK, result

    def _set_aside(self, step: int) -> None:
        """Move a damaged checkpoint out of the way (never deleted: it may be inspected)."""
        if jax.process_index() == 0:
            aside = self._workdir / "checkpoints_unreadable"
            aside.mkdir(parents=True, exist_ok=True)
            target = aside / str(step)
            if target.exists():
                target.rmtree()
            (self._directory / str(step)).rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
        self._manager.reload()

    def restore_newest(
        self, state_template: Any, num_train: int | None
    ) -> tuple[Any, np.ndarray, jax.Array, dict] | None:
        """The newest checkpoint that reads back whole, shaped and sharded like
        `state_template` (its table of `num_train` radii; None: any); None if the workdir has
        none. Damaged newer ones are set aside."""
        self.wait()
        damaged = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            outcome, result = self._read_agreed(step, state_template, num_train)
            if outcome == READ_OK:
                for bad_step, reason in damaged:
                    logging.warning(
                        "checkpoint %d in %s is damaged (%s): moved to checkpoints_unreadable/, "
                        "falling back to checkpoint %d",
                        bad_step,
                        self._directory,
                        reason,
                        step,
                    )
                    self._set_aside(bad_step)
                return result
            damaged.append((step, result))
        if damaged:
            raise CheckpointError(
                f"every checkpoint in {self._directory} is damaged (steps "
                f"{', '.join(str(s) for s, _ in damaged)}; newest: {damaged[0][1]}); nothing "
                "was moved: restore them from a copy, or move checkpoints/ away to start again "
                "from step 0"
            )
        return None

    def restore_step(
        self, step: int, state_template: Any, num_train: int | None
    ) -> tuple[Any, np.ndarray, jax.Array, dict]:
        """Checkpoint `step`, shaped like `state_template`; ConfigError if there is none."""
        self.wait()
        steps = sorted(self._manager.all_steps())
        if step not in steps:
            raise ConfigError(
                f"no checkpoint at step {step} in {self._directory}: its checkpoints are at "
                f"steps {', '.join(map(str, steps)) or 'none'}; pass one of them with --step"
            )
        outcome, result = self._read_agreed(step, state_template, num_train)
        if outcome == READ_DAMAGED:
            raise CheckpointError(
                f"checkpoint {step} in {self._directory} is damaged ({result}): pass another --step"
            )
        return result

    def restore(
        self, state_template: Any, num_train: int | None, step: int | None = None
    ) -> tuple[Any, np.ndarray, jax.Array, dict]:
        """Checkpoint `step` (None: the newest that reads back whole); ConfigError (one line)
        if the workdir has no checkpoint or none at `step`."""
        if step is not None:
            return self.restore_step(step, state_template, num_train)
        restored = self.restore_newest(state_template, num_train)
        if restored is None:
            raise ConfigError(
                f"no checkpoint in {self._directory}: train first with "
                f"`python -m iaat_jax.main --config=... --workdir={self._workdir}`"
            )
        return restored

    def close(self) -> None:
        """Wait for the save in progress (CheckpointError if it failed), then close."""
        try:
            self.wait()
        finally:
            self._manager.close()
