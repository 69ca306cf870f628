"""TFDS input: batches of image [B, H, W, C] uint8, label [B] int32, id [B] int64.

The id of a training example is its position in the TFDS split: the offset of its file shard
(from the split's shard lengths) plus its index inside the shard, both read from `tfds_id`
(ReadConfig(add_tfds_id=True)). It is the same across epochs, shuffles, hosts and restarts, and
indexes the epsilon table. Each host reads the contiguous slice of the split that
`host_range` gives it; epoch `e` is shuffled with seed (config.seed, e), so a restart replays it.
With config.validation_examples = V > 0 the last V examples of the training split are held out:
never trained on (their radii stay put) and evaluated in place of the test split.
TensorFlow is imported only here, where real data is read.
"""

import dataclasses
import math
from collections.abc import Iterator

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from iaat_jax.data import augment
from iaat_jax.data.datasets import DATASETS, Batch, DatasetSpec, HostInput, host_range
from iaat_jax.errors import ConfigError

tf.config.set_visible_devices([], "GPU")  # tf.data only; the accelerators belong to JAX


def get_builder(spec: DatasetSpec, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """The prepared TFDS builder; the embedded dataset is built on first use."""
    if spec.embedded:
        from iaat_jax.data.datasets import mnist5k  # noqa: F401  (registers the builder)
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    if not builder.is_prepared():
        if not spec.embedded:
            raise ConfigError(
                f"TFDS dataset {spec.tfds_name} is not prepared in {builder.data_dir}: "
                f"run `python -m iaat_jax.prepare {spec.tfds_name.split('/')[0]} --data_dir=DIR` "
                "and pass --config.data_dir=DIR (README: Preparing datasets)"
            )
        builder.download_and_prepare()
    return builder


def shard_offsets(shard_lengths: list[int]) -> np.ndarray:
    """Id of the first example of each file shard [num_shards]."""
    return np.cumsum([0] + list(shard_lengths)[:-1]).astype(np.int64)


def example_ids(tfds_id: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
    """Ids int64 from tfds_id strings like b'name-train.tfrecord-00003-of-00008__17'."""
    shard = tf.strings.regex_replace(tfds_id, r"^.*-(\d+)-of-\d+__\d+$", r"\1")
    index = tf.strings.regex_replace(tfds_id, r"^.*__(\d+)$", r"\1")
    return tf.gather(offsets, tf.strings.to_number(shard, tf.int64)) + tf.strings.to_number(
        index, tf.int64
    )


@dataclasses.dataclass
class DataSource(HostInput):
    """The training and evaluation input of one host."""

    builder: tfds.core.DatasetBuilder = None
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)

    def _split_layout(self, split: str) -> tuple[int, list[int]]:
        """(examples, shard lengths) of `split` (a TFDS mock has none: spec size, one shard)."""
        if split in self.builder.info.splits:
            info = self.builder.info.splits[split]
            return info.num_examples, list(info.shard_lengths)
        size = self.spec.num_train if split == self.spec.train_split else self.spec.num_eval
        return size, [size]

    @property
    def num_train(self) -> int:
        """Examples in the whole training split: the size of the epsilon table."""
        return self._split_layout(self.spec.train_split)[0]

    def _read(
        self, split: str, shuffle_seed: int | None, first: int = 0, last: int | None = None
    ) -> tf.data.Dataset:
        """This host's slice of examples [first, last) of `split` (last None: the split's end):
        image (uint8, or JPEG bytes for ImageNet), label, id (the example's place in the split)."""
        num_examples, shard_lengths = self._split_layout(split)
        last = num_examples if last is None else last
        host_slice = host_range(last - first, self.process_index, self.process_count)
        start, end = (first + offset for offset in host_slice)
        offsets = tf.constant(shard_offsets(shard_lengths))
        encoded = self.spec.augmentation == "imagenet"
        dataset = self.builder.as_dataset(
            split=f"{split}[{start}:{end}]",
            shuffle_files=shuffle_seed is not None,
            read_config=tfds.ReadConfig(add_tfds_id=True, shuffle_seed=shuffle_seed),
            decoders={"image": tfds.decode.SkipDecoding()} if encoded else None,
        )

        def select(example):
            return {
                "image": example["image"],
                "label": tf.cast(example["label"], tf.int32),
                "id": example_ids(example["tfds_id"], offsets),
            }

        return dataset.map(select, num_parallel_calls=tf.data.AUTOTUNE)

    def _maybe_cached(
        self, name: str, split: str, seed: int | None, first: int = 0, last: int | None = None
    ) -> tf.data.Dataset:
        if not self.config.cache:
            return self._read(split, seed, first, last)
        if name not in self._cache:
            self._cache[name] = self._read(split, None, first, last).cache()
        return self._cache[name]

    def train_epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """This host's batches `skip` to `steps_per_epoch` of epoch `epoch`, in a replayable
        order. The skipped examples are dropped after the shuffle and before decoding and
        augmenting, which are keyed by (epoch seed, id): a resume gets the batches a replay
        of the epoch would, without decoding the ones before."""
        seed = self.config.seed * 100_003 + epoch
        dataset = self._maybe_cached("train", self.spec.train_split, seed, 0, self.num_trained)
        dataset = dataset.shuffle(self.config.shuffle_buffer, seed=seed)
        dataset = dataset.skip(skip * self.local_batch_size)
        transform = TRAIN_TRANSFORMS[self.spec.augmentation]

        def augment(example):
            example_seed = tf.stack([tf.constant(seed, tf.int64), example["id"]])
            return dict(example, image=transform(example["image"], example_seed))

        dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.batch(self.local_batch_size, drop_remainder=True)
        return iter(tfds.as_numpy(dataset.take(self.steps_per_epoch - skip).prefetch(2)))

    @property
    def num_eval(self) -> int:
        """Examples evaluated: the whole evaluation split, or the held-out training tail."""
        return self.num_validation or self._split_layout(self.spec.eval_split)[0]

    @property
    def num_eval_batches(self) -> int:
        """Evaluation batches per host: the same on every host (the largest slice decides)."""
        local_batch = self.config.eval_batch_size // self.process_count
        return math.ceil(math.ceil(self.num_eval / self.process_count) / local_batch)

    def eval_batches(self) -> Iterator[Batch]:
        """This host's evaluation batches (of the held-out training tail where
        config.validation_examples > 0), padded to full size with mask 0; equal count per host."""
        if self.num_validation:
            dataset = self._maybe_cached("eval", self.spec.train_split, None, self.num_trained)
        else:
            dataset = self._maybe_cached("eval", self.spec.eval_split, None)
        yield from _padded_batches(
            dataset,
            EVAL_TRANSFORMS[self.spec.augmentation],
            self.config.eval_batch_size // self.process_count,
            self.num_eval_batches,
            self.spec.image_shape,
        )


def _padded_batches(dataset, transform, local_batch: int, num_batches: int, image_shape):
    dataset = dataset.map(
        lambda example: dict(example, image=transform(example["image"])),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    batches = iter(tfds.as_numpy(dataset.batch(local_batch).prefetch(2)))
    for _ in range(num_batches):
        yield pad_batch(next(batches, None), local_batch, image_shape)


TRAIN_TRANSFORMS = {
    "none": lambda image, seed: image,
    "cifar": augment.cifar_train,
    "imagenet": augment.imagenet_train,
}
EVAL_TRANSFORMS = {
    "none": augment.identity,
    "cifar": augment.identity,
    "imagenet": augment.imagenet_eval,
}


def pad_batch(batch: Batch | None, size: int, image_shape) -> Batch:
    """`batch` padded with zero rows to `size` examples, plus mask [size] (1 real, 0 pad)."""
    count = 0 if batch is None else len(batch["label"])
    padded = {
        "image": np.zeros((size, *image_shape), np.uint8),
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
    builder = get_builder(spec, config.data_dir)
    return DataSource(config, spec, process_index, process_count, builder=builder)


def training_examples(
    config: ml_collections.ConfigDict, ids=()
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Label of every training example [N_train] by id, and the images [H, W, C] of `ids`
    (float32 in [0, 1])."""
    source = create_data_source(config)
    labels = np.full(source.num_train, -1, np.int32)
    wanted, images = {int(i) for i in ids}, {}
    transform = EVAL_TRANSFORMS[source.spec.augmentation]
    dataset = source._read(source.spec.train_split, None)
    dataset = dataset.map(lambda example: dict(example, image=transform(example["image"])))
    for batch in tfds.as_numpy(dataset.batch(1024)):
        labels[batch["id"]] = batch["label"]
        for example_id, image in zip(batch["id"], batch["image"], strict=True):
            if int(example_id) in wanted:
                images[int(example_id)] = image.astype(np.float32) / np.float32(255)
    return labels, images


def corrupted_eval_batches(
    config: ml_collections.ConfigDict, name: str, process_index: int = 0, process_count: int = 1
) -> tuple[int, Iterator[Batch]]:
    """(examples, padded batches) of the test split of TFDS `cifar10_corrupted/<name>`."""
    spec = DatasetSpec(f"cifar10_corrupted/{name}", "test", "test", (32, 32, 3), 10, 10_000, 10_000)
    uncached = config.copy_and_resolve_references()
    with uncached.unlocked():
        uncached.cache = False  # 95 test sets: read each once instead of holding them all
        uncached.validation_examples = 0  # each corrupted test set whole
    builder = get_builder(spec, config.data_dir)
    source = DataSource(uncached, spec, process_index, process_count, builder=builder)
    return source.num_eval, source.eval_batches()
