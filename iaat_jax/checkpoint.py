"""Orbax checkpoints in <workdir>/checkpoints: train state, epsilon table, base RNG key, meta.

Saved at epoch ends, every `checkpoint_every_steps`, at a requested stop and at the last step.
`restore_newest` restores the newest checkpoint that reads back whole; an unreadable one is
named in one line and moved to <workdir>/checkpoints_unreadable/, and the one before is tried.
`save` waits until the checkpoint is on disk and raises CheckpointError if it is not, so the
caller can stop before anything claims that step. Orbax deletes the oldest checkpoints only
after a newer one is complete.
"""

from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from iaat_jax.config_checks import ConfigError


class CheckpointError(Exception):
    """A checkpoint that could not be written; the message says which and what to do."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


class Checkpointer:
    """Saves and restores (state, epsilon table, key data, meta) by global step."""

    def __init__(self, workdir, max_to_keep: int | None):
        self._workdir = epath.Path(workdir)
        self._directory = self._workdir / "checkpoints"
        self._manager = ocp.CheckpointManager(
            self._directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, table: np.ndarray, key: jax.Array, meta: dict) -> None:
        """Save and wait until it is on disk; CheckpointError (one line) if it is not."""
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    host=ocp.args.StandardSave(
                        {"epsilon_table": table, "key_data": np.asarray(jax.random.key_data(key))}
                    ),
                    meta=ocp.args.JsonSave(meta),
                ),
                force=True,
            )
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as error:  # disk full, permissions, network: all end the same way
            previous = [s for s in self._manager.all_steps() if s < step]
            kept = f"checkpoint {max(previous)} is intact" if previous else "no older checkpoint"
            raise CheckpointError(
                f"saving checkpoint {step} in {self._directory} failed ({_first_line(error)}); "
                f"{kept}: fix the cause (e.g. free disk space) and rerun to resume"
            ) from error

    def _restore(self, step: int, state_template: Any, num_train: int):
        abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
        abstract_host = {
            "epsilon_table": np.zeros(num_train, np.float32),
            "key_data": np.zeros(2, np.uint32),
        }
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                host=ocp.args.StandardRestore(abstract_host),
                meta=ocp.args.JsonRestore(),
            ),
        )
        host = restored["host"]
        table = np.asarray(host["epsilon_table"])
        if table.shape != (num_train,):  # orbax restores an array of another size as saved
            raise ConfigError(
                f"checkpoint at step {step} does not fit this config: its epsilon table has "
                f"{table.shape[0]} examples, this dataset {num_train}; use a fresh --workdir, "
                "or the config that wrote it"
            )
        key = jax.random.wrap_key_data(np.asarray(host["key_data"], np.uint32))
        return restored["state"], table, key, restored["meta"]

    def _set_aside(self, step: int) -> None:
        """Move an unreadable checkpoint out of the way (never deleted: it may be inspected)."""
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
        self, state_template: Any, num_train: int
    ) -> tuple[Any, np.ndarray, jax.Array, dict] | None:
        """The newest readable checkpoint, shaped and sharded like `state_template`, or None."""
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                return self._restore(step, state_template, num_train)
            except ConfigError:
                raise
            except Exception as error:  # truncated, deleted or garbage files
                logging.warning(
                    "checkpoint %d in %s is unreadable (%s): moved to checkpoints_unreadable/, "
                    "falling back to the one before",
                    step,
                    self._directory,
                    _first_line(error),
                )
                self._set_aside(step)
        return None

    def restore_step(
        self, step: int, state_template: Any, num_train: int
    ) -> tuple[Any, np.ndarray, jax.Array, dict]:
        """Checkpoint `step`, shaped like `state_template`; ConfigError if there is none."""
        steps = sorted(self._manager.all_steps())
        if step not in steps:
            raise ConfigError(
                f"no checkpoint at step {step} in {self._directory}: its checkpoints are at "
                f"steps {', '.join(map(str, steps)) or 'none'}; pass one of them with --step"
            )
        return self._restore(step, state_template, num_train)

    def close(self) -> None:
        self._manager.close()
