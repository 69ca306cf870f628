"""python -m iaat_jax.prepare: the builders it prepares, with the manual_dir it was given."""

import pytest
import tensorflow_datasets as tfds

from iaat_jax.data import prepare
from iaat_jax.data.datasets import CIFAR10_CORRUPTIONS


def test_cifar10_corrupted_means_all_95_sets():
    names = prepare.tfds_names("cifar10_corrupted")
    assert len(names) == 95 == len(set(names)) and len(CIFAR10_CORRUPTIONS) == 19
    assert "cifar10_corrupted/fog_3" in names and "cifar10_corrupted/zoom_blur_5" in names
    assert prepare.tfds_names("imagenet2012") == ["imagenet2012"]


def test_each_builder_is_prepared_in_the_data_dir_with_the_manual_dir(monkeypatch, capsys):
    prepared = []

    class FakeBuilder:
        def __init__(self, name, data_dir):
            self.name, self.data_dir = name, data_dir

        def download_and_prepare(self, download_config):
            prepared.append((self.name, self.data_dir, download_config.manual_dir))

    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: FakeBuilder(name, data_dir))
    code = prepare.main(["imagenet2012", "--data_dir=/d", "--manual_dir=/tars"])
    assert code == 0 and prepared == [("imagenet2012", "/d", "/tars")]
    assert "preparing imagenet2012" in capsys.readouterr().out


def test_an_unknown_name_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        prepare.main(["mnist", "--data_dir=/d"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'mnist'" in capsys.readouterr().err
