"""One process of test_multihost's checkpoint tests (not a test itself).

python tests/checkpoint_hosts.py ACTION WORKDIR ADDRESS PROCESSES INDEX
ACTION save: every process saves one known state (seed 3, step 11) and table over the mesh of
all processes' devices; restore: restores it onto this mesh and checks it bit by bit (exit 0);
flaky: saves, then process 1 cannot read (OSError) while the others can; restoring must stop
every process with CheckpointError (exit 3). The devices per process come from XLA_FLAGS.
"""

import importlib.util
import pathlib
import sys

import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from iaat_jax.errors import CheckpointError  # noqa: E402
from iaat_jax.run import experiment, sharding  # noqa: E402
from iaat_jax.run.checkpoint import Checkpointer  # noqa: E402


def known_state(seed: int, mesh):
    spec = importlib.util.spec_from_file_location("default_config", REPO / "configs/default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    model = experiment.create_model(config, 10)
    schedule = experiment.learning_rate_schedule(config, 10)
    state = experiment.create_train_state(
        model, config, (28, 28, 1), jax.random.key(seed), schedule
    )
    return sharding.replicate(state.replace(step=11 if seed == 3 else 0), mesh)


TABLE = np.random.default_rng(1).random(50).astype(np.float32)


def main(action, workdir, address, processes, index) -> int:
    if int(processes) > 1:
        jax.distributed.initialize(address, int(processes), int(index))
    mesh = sharding.make_mesh()
    checkpoints = Checkpointer(workdir, max_to_keep=2, read_attempts=3, retry_seconds=0.2)
    if action in ("save", "flaky"):
        checkpoints.save(11, known_state(3, mesh), TABLE, jax.random.key(4, impl="rbg"), {})
        checkpoints.wait()
    if action == "save":
        checkpoints.close()
        return 0
    if action == "flaky" and jax.process_index() == 1:

        def unreadable(*args, **kwargs):
            raise OSError(5, "Input/output error")

        checkpoints._reader.restore = unreadable
    try:
        state, table, key, _ = checkpoints.restore_newest(known_state(0, mesh), num_train=50)
    except CheckpointError as error:
        print(f"CheckpointError: {error}", flush=True)
        return 3
    want = jax.tree.leaves(known_state(3, mesh))
    for got, expected in zip(jax.tree.leaves(state), want, strict=True):
        assert got.sharding == expected.sharding
        for shard, shard_expected in zip(
            got.addressable_shards, expected.addressable_shards, strict=True
        ):
            np.testing.assert_array_equal(np.asarray(shard.data), np.asarray(shard_expected.data))
    np.testing.assert_array_equal(table, TABLE)
    assert str(jax.random.key_impl(key)) == "rbg"
    checkpoints.close()
    print(f"restored step {int(state.step)} on {jax.device_count()} devices", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
