"""Fake data: the dataset's true shapes, classes and ids, an epoch visiting each id once."""

import numpy as np
from conftest import load_config

from iaat_jax.data import fake_data


def test_fake_data_has_the_true_shapes_classes_and_ids():
    config = load_config("imagenet")
    config.batch_size = 4
    source = fake_data.create_fake_source(config, process_index=1, process_count=2)
    batch = next(source.train_epoch(0))
    assert batch["image"].shape == (2, 224, 224, 3) and batch["image"].dtype == np.uint8
    assert np.all(batch["label"] < 1000) and source.num_train == 1_281_167
    assert np.all((batch["id"] >= 1_281_167 // 2) & (batch["id"] < 1_281_167))


def test_a_fake_epoch_visits_every_id_of_the_host_once_and_replays():
    config = load_config()  # mnist5k: 4,000 ids, batch 80
    source = fake_data.create_fake_source(config)
    ids = np.concatenate([b["id"] for b in source.train_epoch(3)])
    np.testing.assert_array_equal(np.sort(ids), np.arange(4000))
    again = np.concatenate([b["id"] for b in source.train_epoch(3)])
    np.testing.assert_array_equal(ids, again)
    eval_batch = next(source.eval_batches())
    assert eval_batch["mask"].sum() == len(eval_batch["label"]) == 80  # one training-size batch


def test_a_fake_epoch_resumed_mid_way_gives_the_batches_of_a_replay():
    source = fake_data.create_fake_source(load_config())
    replayed, resumed = list(source.train_epoch(2)), list(source.train_epoch(2, skip=30))
    assert len(resumed) == len(replayed) - 30 == 20
    for want, got in zip(replayed[30:], resumed, strict=True):
        for name in ("id", "label", "image"):
            np.testing.assert_array_equal(got[name], want[name])
