"""Where arrays live: a 1-D 'data' mesh over every device of every host, replicated state,
batches sharded along their first axis, and this host's rows back from a sharded array."""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from iaat_jax.data.datasets import Batch

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all devices (of every host) with the single axis 'data'."""
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every leaf of `tree` (the same on every host) on every device of `mesh`, all hosts."""
    sharding = NamedSharding(mesh, P())

    def put(leaf):
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            return jax.random.wrap_key_data(
                put(jax.random.key_data(leaf)), impl=jax.random.key_impl(leaf)
            )
        value = np.asarray(jax.device_get(jnp.asarray(leaf)))  # JAX's dtypes (int -> int32)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map(put, tree)


def shard_rows(local_rows: np.ndarray, mesh: Mesh) -> jax.Array:
    """A global array sharded along axis 0, assembled from this host's rows [B_local, ...]."""
    return jax.make_array_from_process_local_data(NamedSharding(mesh, P(DATA_AXIS)), local_rows)


# float32 value of each uint8 pixel, i / 255 rounded as the host rounds it: a lookup on the
# device gives the host's numbers exactly (XLA turns x / 255 into x * (1 / 255), off by 1 ulp)
_UNIT_PIXELS = np.arange(256, dtype=np.float32) / np.float32(255)


@functools.cache
def _to_unit_on_devices(mesh: Mesh):
    """uint8 images [B, H, W, C], batch-sharded, to float32 in [0, 1], sharded the same way."""
    lookup = lambda pixels: jnp.take(_UNIT_PIXELS, pixels.astype(jnp.int32))  # each device's rows
    by_row = NamedSharding(mesh, P(DATA_AXIS))
    on_each_device = jax.shard_map(lookup, mesh=mesh, in_specs=P(DATA_AXIS), out_specs=P(DATA_AXIS))
    return jax.jit(on_each_device, out_shardings=by_row)


def device_batch(batch: Batch, mesh: Mesh) -> dict[str, jax.Array]:
    """The step's inputs from a host batch: image (float32 in [0, 1]), label and id (int32),
    sharded. uint8 images travel as uint8, a quarter of float32's bytes, and become float32 on
    the devices; float32 images travel as they are."""
    images = shard_rows(batch["image"], mesh)
    if images.dtype == jnp.uint8:
        images = _to_unit_on_devices(mesh)(images)
    return {
        "image": images,
        "label": shard_rows(batch["label"], mesh),
        "id": shard_rows(np.asarray(batch["id"]).astype(np.int32), mesh),
    }


def local_rows(array: jax.Array) -> np.ndarray:
    """This host's rows of a batch-sharded global array, in the order they were given."""
    shards = sorted(array.addressable_shards, key=lambda shard: shard.index[0].start or 0)
    return np.concatenate([np.asarray(shard.data) for shard in shards])


def every_host(values) -> np.ndarray:
    """This host's values [k] (or a scalar) beside every other host's: [hosts, k]."""
    values = np.atleast_1d(np.asarray(values))
    if jax.process_count() == 1:
        return values[None]
    return np.asarray(multihost_utils.process_allgather(values))
