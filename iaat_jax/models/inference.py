"""Faster evaluation-mode forms of models, for the attacks on a CPU.

An attack runs a model thousands of times in evaluation mode (BatchNorm on running statistics)
and needs the gradient with respect to the input only. On a CPU, XLA's convolutions are slow
where they are small: the first 3x3 convolution over one input channel, and the input gradient
of the strided ones (a transposed convolution). `patch_conv` computes the same convolution
with those parts as shifted multiply-adds and matrix products over 3x3 patches.
`evaluation_logits(model)` gives a model's logits in that form where one exists (SmallCNN in
float32 on a CPU) and the model's own `apply` elsewhere; the two agree to float rounding
(tests/test_models.py). Training never uses this form. Measured in docs/evaluation.md, "Cost".
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from iaat_jax.models.small_cnn import SmallCNN

Logits = Callable[[Any, jnp.ndarray], jnp.ndarray]  # (variables, images) -> logits


def _same_padding(size: int, window: int, stride: int) -> tuple[int, int]:
    """XLA's "SAME" padding of one spatial axis (the odd pixel goes after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def _shifted_windows(x: jnp.ndarray, window: int, stride: int) -> list[jnp.ndarray]:
    """Each kernel position's view of the ("SAME"-)padded input, [B, H', W', C] each, in the
    (row, column) order an HWIO kernel flattens."""
    _, height, width, _ = x.shape
    rows, cols = _same_padding(height, window, stride), _same_padding(width, window, stride)
    padded = jnp.pad(x, ((0, 0), rows, cols, (0, 0)))
    out_h, out_w = -(-height // stride), -(-width // stride)
    span_h, span_w = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    return [
        padded[:, i : i + span_h : stride, j : j + span_w : stride, :]
        for i in range(window)
        for j in range(window)
    ]


def patches(x: jnp.ndarray, window: int, stride: int) -> jnp.ndarray:
    """[B, H', W', window * window * C]: each output position's input window ("SAME"
    padding), ordered (row, column, channel) as an HWIO kernel flattens."""
    return jnp.concatenate(_shifted_windows(x, window, stride), axis=-1)


def _shifted(x: jnp.ndarray, start: int, length: int, axis: int) -> jnp.ndarray:
    """x[start : start + length] along `axis`, zeros where that runs outside x."""
    size = x.shape[axis]
    before, after = max(0, -start), max(0, start + length - size)
    if before or after:
        widths = [(0, 0)] * x.ndim
        widths[axis] = (before, after)
        x = jnp.pad(x, widths)
    return jax.lax.slice_in_dim(x, start + before, start + before + length, axis=axis)


def unpatch(columns: jnp.ndarray, shape: tuple[int, ...], window: int, stride: int) -> jnp.ndarray:
    """The transpose of `patches`: each column entry added back at the input pixel it was
    read from, for an input of `shape` [B, H, W, C].

    Built one stride phase at a time: the input pixels (stride * q + a, stride * p + b) for a
    phase (a, b) take their entries from a fixed set of kernel positions, each a shifted slice
    of the columns; the phases are then interleaved. (JAX's own transpose pads every kernel
    position's slice with interior zeros, three times slower here at stride 2.)
    """
    batch, height, width, channels = shape
    out_h, out_w = columns.shape[1:3]
    top, left = _same_padding(height, window, stride)[0], _same_padding(width, window, stride)[0]
    by_position = columns.reshape(batch, out_h, out_w, window, window, channels)
    phase_h, phase_w = -(-height // stride), -(-width // stride)
    rows = []
    for a in range(stride):
        phases = []
        for b in range(stride):
            total = jnp.zeros((batch, phase_h, phase_w, channels), columns.dtype)
            for i in range((a + top) % stride, window, stride):
                for j in range((b + left) % stride, window, stride):
                    entries = by_position[:, :, :, i, j, :]
                    entries = _shifted(entries, (a + top - i) // stride, phase_h, axis=1)
                    total = total + _shifted(entries, (b + left - j) // stride, phase_w, axis=2)
            phases.append(total)
        rows.append(jnp.stack(phases, axis=3).reshape(batch, phase_h, phase_w * stride, channels))
    interleaved = jnp.stack(rows, axis=2).reshape(batch, phase_h * stride, -1, channels)
    return interleaved[:, :height, :width]


def _xla_conv(x: jnp.ndarray, kernel: jnp.ndarray, stride: int) -> jnp.ndarray:
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def patch_conv(x: jnp.ndarray, kernel: jnp.ndarray, stride: int) -> jnp.ndarray:
    """A "SAME" convolution (NHWC, HWIO kernel) that equals XLA's to float rounding.

    Forward: where the input has one channel, a sum of the kernel positions' shifted views
    times their weights (one fused loop), else XLA's convolution; each the faster on a CPU.
    Backward: both gradients as matrix products over patches, the input's put back by
    `unpatch`.
    """
    if x.shape[-1] == 1:
        views = _shifted_windows(x, kernel.shape[0], stride)
        weights = kernel.reshape(len(views), kernel.shape[-1])
        return sum(view * weight for view, weight in zip(views, weights, strict=True))
    return _xla_conv(x, kernel, stride)


def _patch_conv_forward(x, kernel, stride):
    return patch_conv(x, kernel, stride), (x, kernel)


def _varying_axes(x: jnp.ndarray) -> frozenset:
    """The shard_map axes along which x differs between shards (where JAX tracks them: its
    type's manual_axis_type, `vma` in earlier JAX; none where it does not)."""
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)
    return frozenset(manual.varying if manual is not None else getattr(aval, "vma", ()))


def _patch_conv_backward(stride, residuals, cotangent):
    x, kernel = residuals
    window = kernel.shape[0]
    flat_kernel = kernel.reshape(-1, kernel.shape[-1])
    x_cotangent = unpatch(cotangent @ flat_kernel.T, x.shape, window, stride)
    columns = patches(x, window, stride)
    flat_columns = columns.reshape(-1, columns.shape[-1])
    kernel_cotangent = flat_columns.T @ cotangent.reshape(-1, cotangent.shape[-1])
    # under a shard_map that checks varying axes, a kernel shared by the shards gets the sum
    # of their gradients, as JAX's own transpose gives it
    summed = tuple(sorted(_varying_axes(kernel_cotangent) - _varying_axes(kernel)))
    if summed:
        kernel_cotangent = jax.lax.psum(kernel_cotangent, summed)
    return x_cotangent, kernel_cotangent.reshape(kernel.shape)


patch_conv.defvjp(_patch_conv_forward, _patch_conv_backward)


def small_cnn_logits(model: SmallCNN, variables: Any, images: jnp.ndarray) -> jnp.ndarray:
    """SmallCNN's evaluation-mode logits, its convolutions by `patch_conv`, BatchNorm on the
    running statistics in Flax's order of operations."""
    params, stats = variables["params"], variables["batch_stats"]
    x = images.astype(jnp.float32)
    for index in range(len(model.widths)):
        conv = params[f"Conv_{index}"]
        x = patch_conv(x, conv["kernel"], 1 if index == 0 else 2) + conv["bias"]
        norm, running = params[f"BatchNorm_{index}"], stats[f"BatchNorm_{index}"]
        x = (x - running["mean"]) * (jax.lax.rsqrt(running["var"] + 1e-5) * norm["scale"])
        x = nn.relu(x + norm["bias"])
    hidden, head = params["Dense_0"], params["Dense_1"]
    x = nn.relu(x.reshape(x.shape[0], -1) @ hidden["kernel"] + hidden["bias"])
    return (x @ head["kernel"] + head["bias"]).astype(jnp.float32)


def has_fast_form(model: nn.Module) -> bool:
    """A faster form of `model` exists here: SmallCNN in float32, on a CPU (the only place
    it was measured)."""
    return (
        type(model) is SmallCNN
        and jnp.dtype(model.dtype) == jnp.float32
        and jax.default_backend() == "cpu"
    )


@functools.cache  # one function per module: the attack programs are cached by it
def evaluation_logits(model: nn.Module) -> Logits:
    """`model`'s logits in evaluation mode: the faster form where `has_fast_form`, else
    `model.apply(variables, images, train=False)`."""
    if has_fast_form(model):
        return functools.partial(small_cnn_logits, model)
    return lambda variables, images: model.apply(variables, images, train=False)
