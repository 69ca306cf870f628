"""Orbax checkpoints in <workdir>/checkpoints: train state, epsilon table, base RNG key, epoch.

One checkpoint per saved step (epoch ends, and the last step of a capped run); the newest is
restored automatically, so rerunning a command resumes it.
"""

from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from iaat_jax.config_checks import ConfigError


class Checkpointer:
    """Saves and restores (state, epsilon table, key data, meta) by global step."""

    def __init__(self, workdir: epath.Path, max_to_keep: int):
        self._manager = ocp.CheckpointManager(
            epath.Path(workdir) / "checkpoints",
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, table: np.ndarray, key: jax.Array, meta: dict) -> None:
        """Save asynchronously; `wait` blocks until every save is on disk."""
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                host=ocp.args.StandardSave(
                    {"epsilon_table": table, "key_data": np.asarray(jax.random.key_data(key))}
                ),
                meta=ocp.args.JsonSave(meta),
            ),
        )

    def restore(
        self, state_template: Any, num_train: int
    ) -> tuple[Any, np.ndarray, jax.Array, dict]:
        """The latest checkpoint, shaped and sharded like `state_template`."""
        step = self._manager.latest_step()
        abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
        abstract_host = {
            "epsilon_table": np.zeros(num_train, np.float32),
            "key_data": np.zeros(2, np.uint32),
        }
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    host=ocp.args.StandardRestore(abstract_host),
                    meta=ocp.args.JsonRestore(),
                ),
            )
        except (ValueError, KeyError) as error:
            raise ConfigError(
                f"checkpoint at step {step} does not fit this config ({error}): "
                "use a fresh --workdir, or the config that wrote it"
            ) from error
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

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
