"""Flax models by name: `create_model(config.model, ...)`."""

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from iaat_jax.models.small_cnn import SmallCNN

MODELS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": SmallCNN,
}


def create_model(
    name: str, num_classes: int, dtype: jnp.dtype = jnp.float32, bn_axis_name: str | None = None
) -> nn.Module:
    """The model `name` with a `num_classes` head; `__call__(images, train)` gives logits."""
    return MODELS[name](num_classes=num_classes, dtype=dtype, bn_axis_name=bn_axis_name)
