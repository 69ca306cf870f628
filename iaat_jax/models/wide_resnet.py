"""Wide ResNets for CIFAR: the IAAT authors' variant (WRN-32-10) and the standard WRN-34-10.

Both are pre-activation networks with three groups of (depth - 2 or 4) / 6 blocks and widths
16k, 32k, 64k. Inputs are images in [0, 1]; each model normalises them itself.
"""

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)


def _normalise(images: jnp.ndarray, dtype) -> jnp.ndarray:
    mean, std = jnp.asarray(CIFAR_MEAN), jnp.asarray(CIFAR_STD)
    return ((images - mean) / std).astype(dtype)


# The authors' init for every conv (and TRADES's for WRN-34-10): Kaiming normal, mode fan_out,
# ReLU gain, so std = sqrt(2 / (out_channels * kh * kw)), as PyTorch's kaiming_normal_(mode=
# 'fan_out') and TRADES's normal_(0, sqrt(2 / n)) with n = kh * kw * out_channels
KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# PyTorch's default nn.Linear weight init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)); TRADES keeps it
TORCH_LINEAR = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def _batch_norm(train: bool, axis_name: str | None, dtype, affine: bool) -> Callable[[], nn.Module]:
    """A BatchNorm factory; statistics averaged over `axis_name` in training mode."""
    return lambda: nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        use_scale=affine,
        use_bias=affine,
        axis_name=axis_name if train else None,
        dtype=dtype,
    )


def _three_groups(x, block, blocks: int, width: int, norm, dtype) -> jnp.ndarray:
    """Groups of `blocks` blocks with 16, 32, 64 x width channels; stride 2 opens groups 2, 3."""
    for group, channels in enumerate((16 * width, 32 * width, 64 * width)):
        for index in range(blocks):
            x = block(channels, 2 if group > 0 and index == 0 else 1, norm, dtype)(x)
    return x


class _AuthorsBlock(nn.Module):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3; shortcut avg-pool 3x3/2 + zero channels."""

    channels: int
    stride: int
    norm: Callable[[], nn.Module]
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        conv = lambda c, s: nn.Conv(
            c, (3, 3), s, padding=1, use_bias=False, kernel_init=KAIMING_FAN_OUT, dtype=self.dtype
        )
        out = conv(self.channels, self.stride)(nn.relu(self.norm()(x)))
        out = conv(self.channels, 1)(nn.relu(self.norm()(out)))
        shortcut = x
        if self.stride != 1:
            shortcut = nn.avg_pool(shortcut, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        if shortcut.shape[-1] != self.channels:
            extra = self.channels - shortcut.shape[-1]
            shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (0, extra)))
        return out + shortcut


class AuthorsWideResNet(nn.Module):
    """The IAAT release's "WRN-32-10": BatchNorm without affine parameters in the body, first
    conv 16 * width channels, a 1x1-conv head to the classes without bias, then the model's one
    affine BatchNorm (over the classes), then global average pool; convs Kaiming fan_out
    (the authors' models/wideresnet.py: docs/paper_configs.md; 46,090,740 parameters)."""

    num_classes: int
    depth: int = 32
    width: int = 10
    dtype: jnp.dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool) -> jnp.ndarray:
        blocks = (self.depth - 2) // 6
        norm = _batch_norm(train, self.bn_axis_name, self.dtype, affine=False)
        conv = lambda c, k: nn.Conv(
            c, k, padding="SAME", use_bias=False, kernel_init=KAIMING_FAN_OUT, dtype=self.dtype
        )
        x = conv(16 * self.width, (3, 3))(_normalise(images, self.dtype))
        x = _three_groups(x, _AuthorsBlock, blocks, self.width, norm, self.dtype)
        x = nn.relu(norm()(x))
        head_norm = _batch_norm(train, self.bn_axis_name, self.dtype, affine=True)
        x = head_norm()(conv(self.num_classes, (1, 1))(x))  # unbounded logit margins
        return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


class _StandardBlock(nn.Module):
    """Pre-activation block of Zagoruyko & Komodakis; 1x1-conv shortcut when the shape changes."""

    channels: int
    stride: int
    norm: Callable[[], nn.Module]
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        conv = lambda c, k, s, p: nn.Conv(
            c, (k, k), s, padding=p, use_bias=False, kernel_init=KAIMING_FAN_OUT, dtype=self.dtype
        )
        activated = nn.relu(self.norm()(x))
        out = conv(self.channels, 3, self.stride, 1)(activated)
        out = conv(self.channels, 3, 1, 1)(nn.relu(self.norm()(out)))
        if self.stride != 1 or x.shape[-1] != self.channels:
            x = conv(self.channels, 1, self.stride, 0)(activated)
        return out + x


class WideResNet(nn.Module):
    """Standard WRN-depth-width (default 34-10, as in Madry et al. and TRADES), initialised as
    TRADES's models/wideresnet.py: convs Kaiming normal fan_out, BatchNorm scale 1 and shift 0,
    the classifier PyTorch's default weights and a zero bias. Unlike TRADES (raw [0, 1] pixels)
    it normalises its inputs with the CIFAR mean and std."""

    num_classes: int
    depth: int = 34
    width: int = 10
    dtype: jnp.dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool) -> jnp.ndarray:
        blocks = (self.depth - 4) // 6
        norm = _batch_norm(train, self.bn_axis_name, self.dtype, affine=True)
        x = nn.Conv(
            16, (3, 3), padding=1, use_bias=False, kernel_init=KAIMING_FAN_OUT, dtype=self.dtype
        )(_normalise(images, self.dtype))
        x = _three_groups(x, _StandardBlock, blocks, self.width, norm, self.dtype)
        x = jnp.mean(nn.relu(norm()(x)), axis=(1, 2))
        head = nn.Dense(self.num_classes, kernel_init=TORCH_LINEAR, dtype=self.dtype)
        return head(x).astype(jnp.float32)
