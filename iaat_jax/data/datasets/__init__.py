"""What the trainer knows about each dataset, without importing TensorFlow.

`DATASETS` maps a config's `dataset` name to its TFDS name, splits, sizes, image shape, class
count and augmentation; fake data (config.fake_data) is drawn from these facts alone. Builders
that this project ships (the embedded default) live beside this file.
"""

import dataclasses

import ml_collections
import numpy as np

# A host batch: image [B, H, W, C] uint8 (or float32 in [0, 1]), label [B] int32, id [B] int64
# (the example's row of the epsilon table); evaluation batches add mask [B] (1 real, 0 padding).
Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Static facts about one dataset: enough to build a model, fake its data, check a config."""

    tfds_name: str
    train_split: str
    eval_split: str
    image_shape: tuple[int, int, int]  # [H, W, C] as the model sees it
    num_classes: int
    num_train: int
    num_eval: int
    augmentation: str = "none"  # 'none', 'cifar' (pad-crop-flip) or 'imagenet' (resized crops)
    embedded: bool = False  # built by this project on first use, no download needed


DATASETS: dict[str, DatasetSpec] = {
    "mnist5k": DatasetSpec("mnist5k", "train", "test", (28, 28, 1), 10, 4000, 1000, embedded=True),
    "cifar10": DatasetSpec("cifar10", "train", "test", (32, 32, 3), 10, 50_000, 10_000, "cifar"),
    "cifar100": DatasetSpec("cifar100", "train", "test", (32, 32, 3), 100, 50_000, 10_000, "cifar"),
    "imagenet2012": DatasetSpec(
        "imagenet2012", "train", "validation", (224, 224, 3), 1000, 1_281_167, 50_000, "imagenet"
    ),
}


@dataclasses.dataclass
class HostInput:
    """What every input source shares: this host's share of the global batch and the steps."""

    config: ml_collections.ConfigDict
    spec: DatasetSpec
    process_index: int
    process_count: int

    @property
    def num_train(self) -> int:
        """Examples in the whole training split: the size of the epsilon table."""
        raise NotImplementedError

    @property
    def num_validation(self) -> int:
        """Examples at the end of the training split held out for evaluation (0: none)."""
        return self.config.get("validation_examples", 0)

    @property
    def num_trained(self) -> int:
        """Examples trained on each epoch: the training split less its held-out tail."""
        return self.num_train - self.num_validation

    @property
    def evaluated_split(self) -> str:
        """What evaluation reads, in TFDS split syntax: the test split or the held-out tail."""
        if self.num_validation:
            return f"{self.spec.train_split}[{self.num_trained}:]"
        return self.spec.eval_split

    @property
    def local_batch_size(self) -> int:
        return self.config.batch_size // self.process_count

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per epoch, the same on every host (the smallest host slice decides)."""
        return (self.num_trained // self.process_count) // self.local_batch_size


def host_range(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
    """[start, end) of the examples (ids) that host `process_index` reads; hosts differ by <= 1."""
    return (
        num_examples * process_index // process_count,
        num_examples * (process_index + 1) // process_count,
    )


# TFDS cifar10_corrupted: 19 corruptions at severities 1-5, each a config "<name>_<severity>".
CIFAR10_CORRUPTIONS = (
    "brightness",
    "contrast",
    "defocus_blur",
    "elastic",
    "fog",
    "frost",
    "frosted_glass_blur",
    "gaussian_blur",
    "gaussian_noise",
    "impulse_noise",
    "jpeg_compression",
    "motion_blur",
    "pixelate",
    "saturate",
    "shot_noise",
    "snow",
    "spatter",
    "speckle_noise",
    "zoom_blur",
)
