"""Example ids from TFDS: stable, unique per epoch, global across hosts."""

import numpy as np
import pytest
import tensorflow as tf

from iaat_jax.data import input_pipeline
from iaat_jax.data.datasets import DatasetSpec
from iaat_jax.errors import ConfigError


def epoch_arrays(source, epoch):
    batches = list(source.train_epoch(epoch))
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


def test_an_epoch_yields_every_id_once_and_an_id_keeps_its_image(fast_config):
    source = input_pipeline.create_data_source(fast_config)
    assert source.num_train == 4000
    first, second = epoch_arrays(source, 0), epoch_arrays(source, 1)
    for arrays in (first, second):
        np.testing.assert_array_equal(np.sort(arrays["id"]), np.arange(4000))
        assert arrays["image"].dtype == np.uint8 and arrays["label"].dtype == np.int32
        assert arrays["id"].dtype == np.int64 and arrays["image"].max() > 200  # 0-255, not 0-1
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
    offsets = tf.constant(input_pipeline.shard_offsets([5, 7, 3]))
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


def test_a_held_out_tail_is_never_trained_on_and_is_what_evaluation_reads(fast_config):
    whole_config = fast_config.copy_and_resolve_references()
    fast_config.validation_examples, fast_config.eval_batch_size = 500, 96
    fast_config.batch_size = 100  # 3500 = 2 hosts * 35 batches * 50: every trained id once
    trained, evaluated = [], []
    for host in range(2):
        source = input_pipeline.create_data_source(fast_config, process_index=host, process_count=2)
        assert source.num_train == 4000 and source.num_eval == 500  # the table keeps every id
        assert source.steps_per_epoch == 35  # 1,750 of this host's trained ids at 50 per batch
        trained.append(epoch_arrays(source, 0)["id"])
        for batch in source.eval_batches():
            evaluated.append({name: batch[name][batch["mask"] == 1] for name in batch})
    np.testing.assert_array_equal(np.sort(np.concatenate(trained)), np.arange(3500))
    held_out = {name: np.concatenate([b[name] for b in evaluated]) for name in evaluated[0]}
    np.testing.assert_array_equal(np.sort(held_out["id"]), np.arange(3500, 4000))
    whole_source = input_pipeline.create_data_source(whole_config)
    whole = epoch_arrays(whole_source, 0)
    order = np.argsort(whole["id"])
    np.testing.assert_array_equal(held_out["image"], whole["image"][order][held_out["id"]])
    np.testing.assert_array_equal(held_out["label"], whole["label"][order][held_out["id"]])
    assert source.evaluated_split == "train[3500:]" and whole_source.evaluated_split == "test"


def test_a_dataset_that_is_not_prepared_says_how_to_prepare_it(tmp_path):
    spec = DatasetSpec("mnist", "train", "test", (28, 28, 1), 10, 60_000, 10_000)
    with pytest.raises(ConfigError, match="python -m iaat_jax.prepare mnist --data_dir=DIR"):
        input_pipeline.get_builder(spec, str(tmp_path))


@pytest.fixture
def mocked_tfds(monkeypatch):
    """tfds.testing.mock_data, with builders reporting prepared (mocks have no files)."""
    import tensorflow_datasets as tfds

    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    with tfds.testing.mock_data(num_examples=48):
        yield


@pytest.mark.parametrize(
    "config_name, shape, classes",
    [
        ("cifar10", (32, 32, 3), 10),
        ("cifar100", (32, 32, 3), 100),
        ("imagenet", (224, 224, 3), 1000),
    ],
)
def test_paper_datasets_give_batches_of_the_right_shape_range_and_ids(
    mocked_tfds, config_name, shape, classes
):
    from conftest import load_config

    config = load_config(config_name)
    config.batch_size, config.eval_batch_size = 16, 32
    source = input_pipeline.create_data_source(config)
    assert (
        source.num_train
        == {"cifar10": 50_000, "cifar100": 50_000, "imagenet": 1_281_167}[config_name]
    )
    batch = next(source.train_epoch(0))
    assert batch["image"].shape == (16, *shape) and batch["image"].dtype == np.uint8
    assert batch["image"].std() > 0
    assert batch["label"].dtype == np.int32 and np.all(
        (0 <= batch["label"]) & (batch["label"] < classes)
    )
    assert batch["id"].dtype == np.int64 and len(set(batch["id"].tolist())) == 16
    eval_batch = next(source.eval_batches())
    assert eval_batch["image"].shape == (32, *shape) and eval_batch["mask"].sum() > 0
    assert eval_batch["image"].dtype == np.uint8


def test_corrupted_cifar_batches_for_the_corruption_evaluation(mocked_tfds):
    from conftest import load_config

    config = load_config("cifar10")
    config.eval_batch_size = 32
    _, batches = input_pipeline.corrupted_eval_batches(config, "fog_3")
    batch = next(batches)
    assert batch["image"].shape == (32, 32, 32, 3) and batch["image"].dtype == np.uint8


def assert_skip_equals_replay(source, epoch: int, skip: int) -> None:
    replayed = list(source.train_epoch(epoch))
    resumed = list(source.train_epoch(epoch, skip=skip))
    assert skip > 0 and len(resumed) == len(replayed) - skip > 0
    for want, got in zip(replayed[skip:], resumed, strict=True):
        for name in ("id", "label", "image"):
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_a_resume_skips_to_the_batches_a_replay_gives_on_the_embedded_data(fast_config):
    assert_skip_equals_replay(input_pipeline.create_data_source(fast_config), epoch=2, skip=37)


@pytest.mark.parametrize(
    "config_name, augmentation", [("cifar10", "cifar"), ("imagenet", "imagenet")]
)  # random crops and flips; JPEG decoding and random resized crops
def test_a_resume_skips_to_the_batches_a_replay_gives_with_augmentation(
    mocked_tfds, config_name, augmentation
):
    from conftest import load_config

    config = load_config(config_name)
    config.batch_size = 8  # the mock holds 48 examples: 6 batches
    source = input_pipeline.create_data_source(config)
    assert source.spec.augmentation == augmentation
    assert_skip_equals_replay(source, epoch=1, skip=4)
