"""Dataset facts and the embedded MNIST-5k: host slices, a stratified deterministic split."""

import numpy as np
import pytest

from iaat_jax.data.datasets import DATASETS, host_range, mnist5k


def test_the_embedded_split_is_stratified_and_deterministic():
    labels = np.repeat(np.arange(10), 500)
    split, again = mnist5k.stratified_split(labels), mnist5k.stratified_split(labels)
    np.testing.assert_array_equal(split["train"], again["train"])
    assert np.bincount(labels[split["train"]]).tolist() == [400] * 10
    assert np.bincount(labels[split["test"]]).tolist() == [100] * 10
    assert not set(split["train"]) & set(split["test"])


@pytest.mark.parametrize("num_examples, hosts", [(4000, 1), (4000, 3), (1_281_167, 64)])
def test_host_ranges_tile_the_split_and_differ_by_at_most_one(num_examples, hosts):
    ranges = [host_range(num_examples, host, hosts) for host in range(hosts)]
    assert ranges[0][0] == 0 and ranges[-1][1] == num_examples
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    sizes = [end - start for start, end in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_dataset_facts_are_consistent():
    for name, spec in DATASETS.items():
        assert spec.num_train > 0 and spec.num_eval > 0 and spec.num_classes > 1, name
        assert spec.augmentation in ("none", "cifar", "imagenet"), name
    assert DATASETS["mnist5k"].embedded and not DATASETS["cifar10"].embedded
