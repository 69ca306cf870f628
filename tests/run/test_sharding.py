"""Placement: replicated trees, batches sharded by row, and this host's rows back in order."""

import jax
import numpy as np

from iaat_jax.run import sharding


def test_a_batch_goes_out_row_sharded_and_comes_back_in_order():
    mesh = sharding.make_mesh()
    assert mesh.shape == {sharding.DATA_AXIS: 8}
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.random((16, 4, 4, 1), dtype=np.float32),
        "label": rng.integers(0, 10, 16).astype(np.int32),
        "id": rng.permutation(100)[:16].astype(np.int64),
        "mask": np.ones(16, np.float32),  # not an input of the step: left behind
    }
    on_devices = sharding.device_batch(batch, mesh)
    assert sorted(on_devices) == ["id", "image", "label"]
    assert on_devices["id"].dtype == np.int32  # the step's ids
    for name in ("image", "label", "id"):
        shards = on_devices[name].addressable_shards
        assert len(shards) == 8 and shards[1].data.shape[0] == 2  # 2 rows per device
        np.testing.assert_array_equal(sharding.local_rows(on_devices[name]), batch[name])


def test_replicate_puts_every_leaf_and_keys_on_every_device():
    mesh = sharding.make_mesh()
    tree = {"w": np.arange(6.0).reshape(2, 3), "step": 3, "key": jax.random.key(5)}
    replicated = sharding.replicate(tree, mesh)
    for leaf in (replicated["w"], replicated["step"]):
        assert len(leaf.addressable_shards) == 8 and leaf.sharding.is_fully_replicated
    np.testing.assert_array_equal(np.asarray(replicated["w"]), tree["w"])
    assert int(replicated["step"]) == 3
    np.testing.assert_array_equal(
        jax.random.key_data(replicated["key"]), jax.random.key_data(tree["key"])
    )


def test_uint8_images_travel_as_uint8_and_arrive_as_the_hosts_float32():
    import tensorflow as tf

    mesh = sharding.make_mesh()
    pixels = np.arange(256 * 8, dtype=np.int64).reshape(8, 16, 16, 1) % 256
    batch = {"image": pixels.astype(np.uint8), "label": np.zeros(8, np.int32), "id": np.arange(8)}
    on_devices = sharding.device_batch(batch, mesh)["image"]
    assert on_devices.dtype == np.float32 and on_devices.sharding.spec[0] == sharding.DATA_AXIS
    # every pixel value exactly as TF's (and numpy's) float32 x / 255, the old host transform
    expected = (tf.cast(batch["image"], tf.float32) / 255.0).numpy()
    np.testing.assert_array_equal(sharding.local_rows(on_devices), expected)
