"""Flax models by name: `create_model(config.model, ...)`."""

import functools
from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from iaat_jax.models.resnet import ResNet50
from iaat_jax.models.small_cnn import SmallCNN
from iaat_jax.models.wide_resnet import AuthorsWideResNet, WideResNet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": SmallCNN,  # 28x28 digits, CPU-friendly
    "wrn32_10_iaat": AuthorsWideResNet,  # the IAAT release's WRN-32-10 variant (depth=32, width=10)
    # the same family at depth 8, width 1: small enough to benchmark on a CPU (README Performance)
    "wrn8_1_iaat": functools.partial(AuthorsWideResNet, depth=8, width=1),
    "wrn34_10": WideResNet,  # the standard WRN-34-10 of later adversarial-training papers
    "resnet50": ResNet50,  # ImageNet
}


def create_model(
    name: str, num_classes: int, dtype: jnp.dtype = jnp.float32, bn_axis_name: str | None = None
) -> nn.Module:
    """The model `name` with a `num_classes` head; `__call__(images, train)` gives logits."""
    return MODELS[name](num_classes=num_classes, dtype=dtype, bn_axis_name=bn_axis_name)
