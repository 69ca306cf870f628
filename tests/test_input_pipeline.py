"""Example ids from TFDS: stable, unique per epoch, global across hosts."""

import numpy as np
import pytest
import tensorflow as tf

from iaat_jax import input_pipeline
from iaat_jax.datasets import DatasetSpec
from iaat_jax.validation import ConfigError


def epoch_arrays(source, epoch):
    batches = list(source.train_epoch(epoch))
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


def test_an_epoch_yields_every_id_once_and_an_id_keeps_its_image(fast_config):
    source = input_pipeline.create_data_source(fast_config)
    assert source.num_train == 4000
    first, second = epoch_arrays(source, 0), epoch_arrays(source, 1)
    for arrays in (first, second):
        np.testing.assert_array_equal(np.sort(arrays["id"]), np.arange(4000))
        assert arrays["image"].dtype == np.float32 and arrays["label"].dtype == np.int32
        assert arrays["id"].dtype == np.int64
        assert 0.0 <= arrays["image"].min() and arrays["image"].max() <= 1.0
    assert not np.array_equal(first["id"], second["id"])  # the epochs are shuffled differently
    order = np.argsort(second["id"])
    by_id = {"image": second["image"][order], "label": second["label"][order]}
    np.testing.assert_array_equal(first["image"], by_id["image"][first["id"]])
    np.testing.assert_array_equal(first["label"], by_id["label"][first["id"]])


def test_an_epoch_replays_identically(fast_config):
    source = input_pipeline.create_data_source(fast_config)
    np.testing.assert_array_equal(epoch_arrays(source, 3)["id"], epoch_arrays(source, 3)["id"])


def test_hosts_read_disjoint_slices_with_global_ids(fast_config):
    ids = []
    for host in range(2):
        source = input_pipeline.create_data_source(fast_config, process_index=host, process_count=2)
        ids.append(epoch_arrays(source, 0)["id"])
        start, end = input_pipeline.host_range(4000, host, 2)
        assert ids[-1].min() >= start and ids[-1].max() < end
    np.testing.assert_array_equal(np.sort(np.concatenate(ids)), np.arange(4000))


def test_ids_follow_shard_offsets():
    offsets = tf.constant(
        input_pipeline.shard_offsets(type("Split", (), {"shard_lengths": [5, 7, 3]}))
    )
    tfds_ids = tf.constant(
        [
            b"ds-train.tfrecord-00000-of-00003__4",
            b"ds-train.tfrecord-00001-of-00003__0",
            b"ds-train.array_record-00002-of-00003__2",
        ]
    )
    np.testing.assert_array_equal(input_pipeline.example_ids(tfds_ids, offsets).numpy(), [4, 5, 14])


def test_eval_batches_cover_the_test_split_once_with_padding(fast_config):
    fast_config.eval_batch_size = 96  # 1000 = 10 * 96 + 40: the last batch is padded
    source = input_pipeline.create_data_source(fast_config)
    batches = list(source.eval_batches())
    assert len(batches) == 11 and all(len(b["label"]) == 96 for b in batches)
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.sum() == 1000 and np.all(mask[:1000] == 1)
    real_ids = np.concatenate([b["id"] for b in batches])[mask == 1]
    np.testing.assert_array_equal(np.sort(real_ids), np.arange(1000))


def test_a_dataset_that_is_not_prepared_says_how_to_prepare_it(tmp_path):
    spec = DatasetSpec("mnist", "train", "test", (28, 28, 1), 10)
    with pytest.raises(ConfigError, match="tfds build mnist"):
        input_pipeline.get_builder(spec, str(tmp_path))


def test_the_embedded_split_is_stratified_and_deterministic():
    from iaat_jax.datasets import mnist5k

    labels = np.repeat(np.arange(10), 500)
    split, again = mnist5k.stratified_split(labels), mnist5k.stratified_split(labels)
    np.testing.assert_array_equal(split["train"], again["train"])
    assert np.bincount(labels[split["train"]]).tolist() == [400] * 10
    assert np.bincount(labels[split["test"]]).tolist() == [100] * 10
    assert not set(split["train"]) & set(split["test"])
