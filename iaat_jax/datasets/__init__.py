"""What the trainer knows about each dataset, without importing TensorFlow.

`DATASETS` maps a config's `dataset` name to its TFDS name, splits, image shape and class count.
Builders that this project ships (the embedded default) live beside this file.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Static facts about one dataset: enough to build a model and check a config."""

    tfds_name: str
    train_split: str
    eval_split: str
    image_shape: tuple[int, int, int]  # [H, W, C] as the model sees it
    num_classes: int
    embedded: bool = False  # built by this project on first use, no download needed


DATASETS: dict[str, DatasetSpec] = {
    "mnist5k": DatasetSpec("mnist5k", "train", "test", (28, 28, 1), 10, embedded=True),
}
