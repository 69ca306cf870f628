"""A linear classifier on 4-pixel images, and its exact robustness: every corner of the L-inf
ball can be enumerated, so the attacks' verdicts have a brute-force oracle."""

import itertools

import flax.linen as nn
import numpy as np
import optax

from iaat_jax.run.experiment import TrainState

N, SHAPE = 64, (2, 2, 1)  # 4 pixels: every corner of the ball can be enumerated


class Linear(nn.Module):
    """Linear classifier (two classes unless said): the worst case in a box is at a corner."""

    num_classes: int = 2

    @nn.compact
    def __call__(self, images, train: bool):
        del train
        return nn.Dense(self.num_classes)(images.reshape(images.shape[0], -1))


def state_of(model, variables) -> TrainState:
    """A TrainState around given variables (evaluation only looks at params and batch stats)."""
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=optax.sgd(0.1),
    )


def brute_force_robust(weights, bias, images, labels, eps):
    """1 where no corner of the clipped L-inf ball [x - eps, x + eps] & [0, 1] is misclassified."""
    robust = []
    for image, label in zip(images.reshape(N, -1), labels, strict=True):
        low, high = np.clip(image - eps, 0, 1), np.clip(image + eps, 0, 1)
        corners = np.array(list(itertools.product(*zip(low, high, strict=True))))
        logits = corners @ weights + bias
        robust.append(np.all(np.argmax(logits, axis=1) == label))
    return np.array(robust, np.float32)
