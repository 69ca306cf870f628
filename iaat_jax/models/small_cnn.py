"""A small convolutional network for 28x28 digits: fast enough for PGD training on a CPU."""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp


class SmallCNN(nn.Module):
    """conv3x3 (stride 1, 2, 2) with BatchNorm and ReLU, then a hidden dense layer and the head."""

    num_classes: int
    widths: Sequence[int] = (8, 16, 32)
    hidden: int = 64
    dtype: jnp.dtype = jnp.float32
    bn_axis_name: str | None = None  # mesh axis over which BatchNorm statistics are averaged

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool) -> jnp.ndarray:
        """Logits [B, num_classes] for images [B, H, W, C] in [0, 1]."""
        x = images.astype(self.dtype)
        for index, width in enumerate(self.widths):
            x = nn.Conv(width, (3, 3), strides=1 if index == 0 else 2, dtype=self.dtype)(x)
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=0.9,
                axis_name=self.bn_axis_name if train else None,
                dtype=self.dtype,
            )(x)
            x = nn.relu(x)
        x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
