"""Models: output shapes, parameter counts against the architectures, mixed precision."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iaat_jax import models
from iaat_jax.attacks import pgd
from iaat_jax.attacks.pgd import cross_entropy, example_keys


def param_count(model, shape) -> int:
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False)
    )
    return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


def authors_wrn_count(depth: int, width: int, classes: int, channels: int = 3) -> int:
    """3x3 convs of the authors' WRN (no biases, BatchNorm without affine), the 1x1 head conv
    without bias and its affine BatchNorm (scale and shift per class)."""
    blocks, widths = (depth - 2) // 6, (16 * width, 32 * width, 64 * width)
    total, previous = 9 * channels * widths[0], widths[0]
    for out in widths:
        total += 9 * previous * out + 9 * out * out + (blocks - 1) * 2 * 9 * out * out
        previous = out
    return total + widths[-1] * classes + 2 * classes


@pytest.mark.parametrize(
    "name, shape, classes, expected",
    [
        ("small_cnn", (28, 28, 1), 10, 107_066),
        ("wrn32_10_iaat", (32, 32, 3), 10, 46_090_740),  # the authors' WRN-32-10 in PyTorch
        ("wrn8_1_iaat", (32, 32, 3), 10, authors_wrn_count(8, 1, 10)),  # its CPU benchmark size
        ("wrn34_10", (32, 32, 3), 10, 46_160_474),  # WRN-34-10 as in Madry et al., TRADES
        ("resnet50", (224, 224, 3), 1000, 25_557_032),  # torchvision's ResNet-50
    ],
)
def test_parameter_counts_match_the_architectures(name, shape, classes, expected):
    assert param_count(models.create_model(name, classes), shape) == expected


@pytest.mark.parametrize("depth, width, classes", [(8, 1, 10), (14, 2, 100), (32, 10, 10)])
def test_authors_wrn_follows_the_closed_form_count_at_every_depth_and_width(depth, width, classes):
    model = models.AuthorsWideResNet(num_classes=classes, depth=depth, width=width)
    assert param_count(model, (32, 32, 3)) == authors_wrn_count(depth, width, classes)


def test_authors_wrn_init_and_head_are_the_authors():
    model = models.AuthorsWideResNet(num_classes=10, depth=8, width=4)
    params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)["params"]
    kernels = [leaf for leaf in jax.tree.leaves(params) if leaf.ndim == 4]
    assert len(kernels) == 8  # first conv, 3 blocks x 2, head
    for kernel in kernels:  # Kaiming normal, fan_out, ReLU gain: std = sqrt(2 / (out * kh * kw))
        kh, kw, _, out = kernel.shape
        expected = np.sqrt(2.0 / (out * kh * kw))
        assert float(np.std(kernel)) == pytest.approx(expected, rel=0.08), kernel.shape
    head_norm = params["BatchNorm_1"]  # the only affine BatchNorm: learnable scale and shift
    assert head_norm["scale"].shape == head_norm["bias"].shape == (10,)
    assert "bias" not in params["Conv_1"]  # the head conv has no bias
    assert [name for name in params if name.startswith("BatchNorm")] == ["BatchNorm_1"]


def test_wrn34_init_is_tradess_and_resnet50_init_is_the_flax_examples():
    # TRADES models/wideresnet.py: convs normal(0, sqrt(2 / (kh * kw * out))), BatchNorm 1 / 0,
    # the classifier PyTorch's default U(+-1/sqrt(fan_in)) (std 1/sqrt(3 fan_in)), bias 0
    model = models.WideResNet(num_classes=10, depth=10, width=4)
    params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)["params"]
    kernels = [leaf for leaf in jax.tree.leaves(params) if leaf.ndim == 4]
    assert len(kernels) == 1 + 3 * 2 + 3  # first conv, 3 blocks x 2, a 1x1 shortcut per group
    for kernel in kernels:
        kh, kw, _, out = kernel.shape
        expected = np.sqrt(2.0 / (out * kh * kw))
        tolerance = 0.2 if kernel.size < 1000 else 0.08  # the first conv: 432 draws
        assert float(np.std(kernel)) == pytest.approx(expected, rel=tolerance), kernel.shape
    head = params["Dense_0"]
    fan_in = head["kernel"].shape[0]
    assert float(np.abs(head["kernel"]).max()) <= 1 / np.sqrt(fan_in)
    assert float(np.std(head["kernel"])) == pytest.approx(1 / np.sqrt(3 * fan_in), rel=0.1)
    assert not np.any(head["bias"])
    # flax examples/imagenet ResNet-50: the last BatchNorm of each bottleneck starts at scale 0,
    # every other at 1; convs lecun normal (flax's default, std 1/sqrt(fan_in))
    resnet = models.ResNet50(num_classes=10, stage_sizes=(1, 1, 1, 1))
    params = resnet.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)["params"]
    for index in range(4):
        block = params[f"_Bottleneck_{index}"]
        assert not np.any(block["BatchNorm_2"]["scale"])
        assert np.all(block["BatchNorm_0"]["scale"] == 1)
        kernel = block["Conv_1"]["kernel"]
        fan_in = np.prod(kernel.shape[:3])
        assert float(np.std(kernel)) == pytest.approx(1 / np.sqrt(fan_in), rel=0.15)


@pytest.mark.parametrize(
    "model, shape",
    [
        (models.AuthorsWideResNet(num_classes=7, depth=8, width=1), (32, 32, 3)),
        (models.WideResNet(num_classes=7, depth=10, width=1), (32, 32, 3)),
        (models.ResNet50(num_classes=7, stage_sizes=(1, 1, 1, 1)), (64, 64, 3)),
        (models.SmallCNN(num_classes=7), (28, 28, 1)),
    ],
)
def test_output_shape_and_training_mode(model, shape):
    images = jax.random.uniform(jax.random.key(1), (3, *shape))
    variables = model.init(jax.random.key(0), images, train=False)
    logits, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
    assert logits.shape == (3, 7) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(logits)))
    assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(
        variables["batch_stats"]
    )


def test_bfloat16_compute_keeps_float32_parameters_and_a_float32_attack():
    model = models.create_model("small_cnn", 10, dtype=jnp.bfloat16)
    images = jax.random.uniform(jax.random.key(1), (8, 28, 28, 1))
    variables = model.init(jax.random.key(0), images, train=False)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables["params"])} == {jnp.dtype(jnp.float32)}
    labels = jnp.zeros(8, jnp.int32)
    loss_fn = lambda x, y: cross_entropy(model.apply(variables, x, train=False), y)
    radius = jnp.full(8, 0.1)
    adversarial = pgd.pgd_attack(
        loss_fn,
        images,
        labels,
        radius,
        jnp.full(8, 0.03),
        5,
        example_keys(jax.random.key(2), 0, jnp.arange(8)),
    )
    assert adversarial.dtype == jnp.float32
    assert float(jnp.abs(adversarial - images).max()) <= 0.1 + 1e-6
    assert float(jnp.abs(adversarial - images).max()) > 0.05


def _perturbed_small_cnn(widths=(8, 16, 32), shape=(28, 28, 1), batch=16, seed=0):
    """A SmallCNN whose BatchNorm statistics and affine parameters are not their initial
    values (as after training), and images in [0, 1]."""
    model = models.SmallCNN(num_classes=10, widths=widths)
    images = jax.random.uniform(jax.random.key(seed), (batch, *shape))
    variables = model.init(jax.random.key(seed + 1), images, train=False)
    leaves, tree = jax.tree_util.tree_flatten(variables)
    keys = jax.random.split(jax.random.key(seed + 2), len(leaves))
    leaves = [
        leaf + 0.3 * jax.random.uniform(k, leaf.shape) for leaf, k in zip(leaves, keys, strict=True)
    ]
    return model, jax.tree_util.tree_unflatten(tree, leaves), images


@pytest.mark.parametrize(
    "widths, shape", [((8, 16, 32), (28, 28, 1)), ((4, 6, 5), (13, 11, 3)), ((3, 4, 2), (9, 8, 1))]
)
def test_the_fast_evaluation_form_gives_the_models_logits_and_gradients(widths, shape):
    """inference.small_cnn_logits against Flax's apply: logits, the input gradient of a loss
    and every weight's gradient, to float rounding; odd sizes test the "SAME" padding."""
    from iaat_jax.models import inference

    model, variables, images = _perturbed_small_cnn(widths, shape)
    labels = jnp.arange(len(images)) % 10
    fast = functools.partial(inference.small_cnn_logits, model)
    plain = lambda v, x: model.apply(v, x, train=False)
    # the attacks get this form on a CPU, the only place it was measured
    assert inference.has_fast_form(model) == (jax.default_backend() == "cpu")

    def loss(logits_fn, v, x):
        return cross_entropy(logits_fn(v, x), labels).sum()

    expected, got = plain(variables, images), jax.jit(fast)(variables, images)
    scale = float(jnp.abs(expected).max())
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * scale)
    want = jax.grad(functools.partial(loss, plain), argnums=(0, 1))(variables, images)
    have = jax.jit(jax.grad(functools.partial(loss, fast), argnums=(0, 1)))(variables, images)
    for a, b in zip(jax.tree_util.tree_leaves(have), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * float(jnp.abs(b).max()) + 1e-30)


def test_models_without_a_fast_form_are_attacked_through_their_apply():
    from iaat_jax.models import inference

    model = models.create_model("wrn8_1_iaat", 10)
    images = jnp.zeros((2, 32, 32, 3))
    variables = model.init(jax.random.key(0), images, train=False)
    logits = inference.evaluation_logits(model)(variables, images)
    np.testing.assert_array_equal(logits, model.apply(variables, images, train=False))
    assert not inference.has_fast_form(models.SmallCNN(10, dtype=jnp.bfloat16))


@pytest.mark.parametrize(
    "channels, stride, size", [(1, 1, 7), (1, 2, 9), (3, 2, 8), (2, 1, 6), (2, 3, 8), (8, 2, 28)]
)
def test_patch_conv_is_xlas_convolution_with_both_gradients(channels, stride, size):
    """Every branch of inference.patch_conv (one channel or several, stride 1, 2 or 3, odd and even
    sizes) against lax's "SAME" convolution: value, input and kernel gradients."""
    from iaat_jax.models import inference

    x = jax.random.uniform(jax.random.key(0), (3, size, size, channels))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, channels, 4))
    weights = jax.random.normal(jax.random.key(2), (3, -(-size // stride), -(-size // stride), 4))

    def xla(x, kernel):
        dims = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(
            x, kernel, (stride, stride), "SAME", dimension_numbers=dims
        )

    def value_and_grads(conv):
        loss = lambda x, kernel: (conv(x, kernel) * weights).sum()
        value, grads = jax.value_and_grad(loss, (0, 1))(x, kernel)
        return (value, *grads)

    expected = value_and_grads(xla)
    got = value_and_grads(lambda x, kernel: inference.patch_conv(x, kernel, stride))
    for have, want in zip(got, expected, strict=True):
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-5)


def test_the_fast_form_differentiates_under_a_shard_map_that_checks_varying_axes():
    """On 2 devices under shard_map's default check: the weights' gradient is the whole batch's
    (patch_conv sums its kernel's over the shards, as JAX does for Flax's form) and each
    shard's input gradient is its rows'."""
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    from iaat_jax.models import inference

    model, variables, images = _perturbed_small_cnn(batch=8)
    labels = jnp.arange(8) % 10
    fast = functools.partial(inference.small_cnn_logits, model)
    loss = lambda v, x, y: cross_entropy(fast(v, x), y).sum()
    mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
    sharded = jax.jit(
        jax.shard_map(
            jax.grad(loss, argnums=(0, 1)),
            mesh=mesh,
            in_specs=(P(), P("data"), P("data")),
            out_specs=(P(), P("data")),
        )
    )
    got = sharded(variables, images, labels)
    want = jax.grad(loss, argnums=(0, 1))(variables, images, labels)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * float(jnp.abs(b).max()) + 1e-30)
