"""ResNet-50 (v1.5: stride on the 3x3 convolution) for ImageNet, inputs in [0, 1]."""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 (4x channels), BatchNorm after each conv, projection shortcut."""

    channels: int
    stride: int
    dtype: jnp.dtype
    bn_axis_name: str | None

    @nn.compact
    def __call__(self, x, train: bool):
        def norm(zero_scale=False):
            return nn.BatchNorm(
                use_running_average=not train,
                momentum=0.9,
                epsilon=1e-5,
                dtype=self.dtype,
                axis_name=self.bn_axis_name if train else None,
                scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones,
            )

        conv = lambda c, k, s=1: nn.Conv(
            c, (k, k), s, padding="SAME", use_bias=False, dtype=self.dtype
        )
        out = nn.relu(norm()(conv(self.channels, 1)(x)))
        out = nn.relu(norm()(conv(self.channels, 3, self.stride)(out)))
        out = norm(zero_scale=True)(conv(4 * self.channels, 1)(out))
        if self.stride != 1 or x.shape[-1] != 4 * self.channels:
            x = norm()(conv(4 * self.channels, 1, self.stride)(x))
        return nn.relu(out + x)


class ResNet50(nn.Module):
    """ResNet-50: stem 7x7/2 + max-pool, stages of (3, 4, 6, 3) bottlenecks, global pool, FC."""

    num_classes: int
    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    dtype: jnp.dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool) -> jnp.ndarray:
        x = ((images - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)).astype(self.dtype)
        x = nn.Conv(64, (7, 7), 2, padding=((3, 3), (3, 3)), use_bias=False, dtype=self.dtype)(x)
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.dtype,
            axis_name=self.bn_axis_name if train else None,
        )(x)
        x = nn.max_pool(nn.relu(x), (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        for stage, blocks in enumerate(self.stage_sizes):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                x = _Bottleneck(64 * 2**stage, stride, self.dtype, self.bn_axis_name)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
