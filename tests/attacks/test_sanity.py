"""AutoAttack's sanity checks fire on the models they are meant for and stay quiet otherwise."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from linear_oracle import Linear

from iaat_jax.attacks import autoattack, sanity
from iaat_jax.run import sharding


class BatchDependent(nn.Module):
    """A linear classifier of inputs centred on the batch mean: an example's logits depend on
    the rest of its batch, as with BatchNorm left on batch statistics."""

    @nn.compact
    def __call__(self, images, train: bool):
        del train
        flat = images.reshape(images.shape[0], -1)
        weights = jnp.linspace(-1.0, 1.0, flat.shape[1] * 4).reshape(flat.shape[1], 4)
        return nn.Dense(4)((flat - flat.mean(axis=0)) @ weights)


@pytest.mark.parametrize("num_devices", [1, 8])
def test_the_randomness_check_fires_only_for_logits_that_depend_on_the_batch(num_devices):
    rng = np.random.default_rng(0)
    # a batch whose first half differs from its second: moving rows moves the batch mean
    images = rng.random((32, 4, 4, 1), dtype=np.float32)
    images[16:] *= 0.2
    batch = {"image": images, "label": np.zeros(32, np.int32), "id": np.arange(32)}
    mesh = sharding.make_mesh(jax.devices()[:num_devices])
    found = {}
    for name, model in (("plain", Linear(num_classes=4)), ("batch", BatchDependent())):
        variables = model.init(jax.random.key(1), jnp.asarray(images), train=False)
        classify = autoattack.flax_classifier(model)
        replicated = sharding.replicate(variables, mesh)
        found[name] = sanity.model_checks(classify, replicated, mesh, batch, np.ones(32))
    assert not found["plain"]["randomness_suspected"]
    assert found["plain"]["logits_change_between_passes"] < 1e-6
    assert found["plain"]["zero_gradient_examples"] == 0
    assert found["batch"]["randomness_suspected"]
    assert sanity.warnings(found["plain"]) == []


def test_the_masking_check_uses_autoattacks_threshold_and_every_warning_has_a_line():
    assert not sanity.square_check(2, 1000)["gradient_masking_suspected"]  # 0.2%
    fired = sanity.square_check(3, 1000)
    assert fired["gradient_masking_suspected"] and fired["square_broke"] == 3
    checks = dict(
        fired,
        zero_gradient_examples=5,
        checked_examples=200,
        randomness_suspected=True,
        logits_change_between_passes=0.3,
    )
    assert len(sanity.warnings(checks)) == 3
