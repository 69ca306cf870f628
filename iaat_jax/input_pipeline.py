"""TFDS input: batches of image [B, H, W, C] float32 in [0, 1], label [B] int32, id [B] int64.

The id of a training example is its position in the TFDS split: the offset of its file shard
(from the split's shard lengths) plus its index inside the shard, both read from `tfds_id`
(ReadConfig(add_tfds_id=True)). It is the same across epochs, shuffles, hosts and restarts, and
indexes the epsilon table. Each host reads the contiguous slice of the split that
`host_range` gives it; epoch `e` is shuffled with seed (config.seed, e), so a restart replays it.
TensorFlow is imported only here, where real data is read.
"""

import dataclasses
import math
from collections.abc import Iterator

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from iaat_jax.datasets import DATASETS, DatasetSpec
from iaat_jax.validation import ConfigError

tf.config.set_visible_devices([], "GPU")  # tf.data only; the accelerators belong to JAX
Batch = dict[str, np.ndarray]


def get_builder(spec: DatasetSpec, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """The prepared TFDS builder; the embedded dataset is built on first use."""
    if spec.embedded:
        from iaat_jax.datasets import mnist5k  # noqa: F401  (registers the builder)
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    if not builder.is_prepared():
        if not spec.embedded:
            raise ConfigError(
                f"TFDS dataset {spec.tfds_name} is not prepared in {builder.data_dir}: "
                f"run `tfds build {spec.tfds_name} --data_dir=DIR` and pass --config.data_dir=DIR "
                "(README: Preparing datasets)"
            )
        builder.download_and_prepare()
    return builder


def host_range(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
    """[start, end) of the examples that host `process_index` reads; hosts differ by <= 1."""
    return (
        num_examples * process_index // process_count,
        num_examples * (process_index + 1) // process_count,
    )


def shard_offsets(split_info) -> np.ndarray:
    """Id of the first example of each file shard [num_shards]; one shard if unknown (mocks)."""
    return np.cumsum([0] + list(split_info.shard_lengths)[:-1]).astype(np.int64)


def example_ids(tfds_id: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
    """Ids int64 from tfds_id strings like b'name-train.tfrecord-00003-of-00008__17'."""
    shard = tf.strings.regex_replace(tfds_id, r"^.*-(\d+)-of-\d+__\d+$", r"\1")
    index = tf.strings.regex_replace(tfds_id, r"^.*__(\d+)$", r"\1")
    return tf.gather(offsets, tf.strings.to_number(shard, tf.int64)) + tf.strings.to_number(
        index, tf.int64
    )


@dataclasses.dataclass
class DataSource:
    """The training and evaluation input of one host."""

    config: ml_collections.ConfigDict
    builder: tfds.core.DatasetBuilder
    spec: DatasetSpec
    process_index: int
    process_count: int

    @property
    def num_train(self) -> int:
        """Examples in the whole training split: the size of the epsilon table."""
        return self.builder.info.splits[self.spec.train_split].num_examples

    @property
    def local_batch_size(self) -> int:
        return self.config.batch_size // self.process_count

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per epoch, the same on every host (the smallest host slice decides)."""
        return (self.num_train // self.process_count) // self.local_batch_size

    def _read(self, split: str, shuffle_seed: int | None) -> tf.data.Dataset:
        split_info = self.builder.info.splits[split]
        start, end = host_range(split_info.num_examples, self.process_index, self.process_count)
        offsets = tf.constant(shard_offsets(split_info))
        dataset = self.builder.as_dataset(
            split=f"{split}[{start}:{end}]",
            shuffle_files=shuffle_seed is not None,
            read_config=tfds.ReadConfig(add_tfds_id=True, shuffle_seed=shuffle_seed),
        )

        def decode(example):
            return {
                "image": tf.cast(example["image"], tf.float32) / 255.0,
                "label": tf.cast(example["label"], tf.int32),
                "id": example_ids(example["tfds_id"], offsets),
            }

        return dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)

    def train_epoch(self, epoch: int) -> Iterator[Batch]:
        """This host's `steps_per_epoch` batches of epoch `epoch`, in a replayable order."""
        seed = self.config.seed * 100_003 + epoch
        if self.config.cache:
            if not hasattr(self, "_cached_train"):
                self._cached_train = self._read(self.spec.train_split, None).cache()
            dataset = self._cached_train
        else:
            dataset = self._read(self.spec.train_split, seed)
        dataset = dataset.shuffle(self.config.shuffle_buffer, seed=seed)
        dataset = dataset.batch(self.local_batch_size, drop_remainder=True)
        return iter(tfds.as_numpy(dataset.take(self.steps_per_epoch).prefetch(2)))

    @property
    def num_eval(self) -> int:
        """Examples in the whole evaluation split."""
        return self.builder.info.splits[self.spec.eval_split].num_examples

    @property
    def num_eval_batches(self) -> int:
        """Evaluation batches per host: the same on every host (the largest slice decides)."""
        local_batch = self.config.eval_batch_size // self.process_count
        return math.ceil(math.ceil(self.num_eval / self.process_count) / local_batch)

    def eval_batches(self) -> Iterator[Batch]:
        """This host's evaluation batches, padded to full size with mask 0; equal count per host."""
        local_batch = self.config.eval_batch_size // self.process_count
        dataset = self._read(self.spec.eval_split, None)
        if self.config.cache:
            if not hasattr(self, "_cached_eval"):
                self._cached_eval = dataset.cache()
            dataset = self._cached_eval
        batches = iter(tfds.as_numpy(dataset.batch(local_batch).prefetch(2)))
        for _ in range(self.num_eval_batches):
            yield pad_batch(next(batches, None), local_batch, self.spec.image_shape)


def pad_batch(batch: Batch | None, size: int, image_shape) -> Batch:
    """`batch` padded with zero rows to `size` examples, plus mask [size] (1 real, 0 pad)."""
    count = 0 if batch is None else len(batch["label"])
    padded = {
        "image": np.zeros((size, *image_shape), np.float32),
        "label": np.zeros(size, np.int32),
        "id": np.zeros(size, np.int64),
        "mask": (np.arange(size) < count).astype(np.float32),
    }
    for name in ("image", "label", "id"):
        if count:
            padded[name][:count] = batch[name]
    return padded


def create_data_source(
    config: ml_collections.ConfigDict, process_index: int = 0, process_count: int = 1
) -> DataSource:
    """Open (and for the embedded default, build) the config's dataset for this host."""
    spec = DATASETS[config.dataset]
    return DataSource(
        config, get_builder(spec, config.data_dir), spec, process_index, process_count
    )


def training_examples(
    config: ml_collections.ConfigDict, ids=()
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Label of every training example [N_train] by id, and the images [H, W, C] of `ids`."""
    source = create_data_source(config)
    labels = np.full(source.num_train, -1, np.int32)
    wanted, images = {int(i) for i in ids}, {}
    for batch in tfds.as_numpy(source._read(source.spec.train_split, None).batch(1024)):
        labels[batch["id"]] = batch["label"]
        for example_id, image in zip(batch["id"], batch["image"], strict=True):
            if int(example_id) in wanted:
                images[int(example_id)] = image
    return labels, images
