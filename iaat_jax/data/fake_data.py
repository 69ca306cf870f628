"""Random batches with a dataset's true shapes, classes and ids, for smoke runs anywhere.

`config.fake_data=True` swaps this in for the TFDS input. It needs only numpy (no TensorFlow),
so any config runs where TensorFlow is not installed. The epsilon table has the real
N_train; each epoch visits every id of this host's slice once, and evaluation is one batch.
"""

from collections.abc import Iterator

import ml_collections
import numpy as np

from iaat_jax.data.datasets import DATASETS, Batch, HostInput, host_range


class FakeDataSource(HostInput):
    """The DataSource interface of input_pipeline, filled with uniform random images."""

    @property
    def num_train(self) -> int:
        return self.spec.num_train

    @property
    def num_eval(self) -> int:
        return self.config.batch_size  # one batch: fake accuracy is not worth more compute

    num_eval_batches = 1

    def _batch(self, rng: np.random.Generator, ids: np.ndarray) -> Batch:
        return {
            "image": rng.integers(0, 256, (len(ids), *self.spec.image_shape), dtype=np.uint8),
            "label": rng.integers(0, self.spec.num_classes, len(ids)).astype(np.int32),
            "id": ids.astype(np.int64),
        }

    def train_epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """Batches `skip` to `steps_per_epoch` of epoch `epoch`; each is drawn from its own
        seed, so skipping gives the batches a replay would."""
        start, end = host_range(self.num_trained, self.process_index, self.process_count)
        seed = (self.config.seed, epoch, self.process_index)
        ids = start + np.random.default_rng(seed).permutation(end - start)
        for step in range(skip, self.steps_per_epoch):
            yield self._batch(
                np.random.default_rng((*seed, step)),
                ids[step * self.local_batch_size : (step + 1) * self.local_batch_size],
            )

    def eval_batches(self) -> Iterator[Batch]:
        rng = np.random.default_rng((self.config.seed, -1 % 2**32, self.process_index))
        batch = self._batch(rng, np.arange(self.local_batch_size))
        yield dict(batch, mask=np.ones(self.local_batch_size, np.float32))


def create_fake_source(
    config: ml_collections.ConfigDict, process_index: int = 0, process_count: int = 1
) -> FakeDataSource:
    return FakeDataSource(config, DATASETS[config.dataset], process_index, process_count)
