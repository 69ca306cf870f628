"""MART (Wang et al., "Improving adversarial robustness requires revisiting misclassified
examples", ICLR 2020), as the authors' `mart.py` computes it: a boosted cross-entropy on the
adversarial example plus beta times the KL divergence of the adversarial prediction from the
clean one, weighted per example by 1 - p_y(clean), so that misclassified examples weigh more.

    BCE(p', y) = -log p'_y - log(1 - max_{k != y} p'_k)
    loss = BCE(p', y) + beta * KL(p || p') * (1 - p_y),    p = softmax(f(x)), p' = softmax(f(x'))

Their attack is PGD on the cross-entropy from the same small Gaussian start as TRADES's
(iaat_jax.method.trades.gaussian_start). Their small constants are kept: 1e-12 inside each log,
1.0001 in the boosted term, 1.0000001 in the weight. Pure functions; the train step runs them.
"""

import jax
import jax.numpy as jnp

from iaat_jax.attacks import pgd

BETA = 6.0  # the authors' default (train_wideresnet.py)


def boosted_cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """[B]: CE(logits, y) - log(1.0001 - q_k + 1e-12), q = softmax(logits), k the most likely
    class other than y."""
    probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    others = jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool), -1.0, probabilities)
    runner_up = jnp.take_along_axis(probabilities, jnp.argmax(others, -1)[:, None], -1)[:, 0]
    return pgd.cross_entropy(logits, labels) - jnp.log(1.0001 - runner_up + 1e-12)


def mart_loss(
    clean_logits: jnp.ndarray,
    adversarial_logits: jnp.ndarray,
    labels: jnp.ndarray,
    beta: float,
) -> jnp.ndarray:
    """[B]: the per-example MART loss; its mean over the batch is the authors' loss, with
    gradients through both predictions (the weight 1 - p_y(clean) included)."""
    p = jax.nn.softmax(clean_logits.astype(jnp.float32), axis=-1)
    q = jax.nn.softmax(adversarial_logits.astype(jnp.float32), axis=-1)
    kl = jnp.sum(
        jnp.where(p > 0, p * (jnp.log(jnp.where(p > 0, p, 1.0)) - jnp.log(q + 1e-12)), 0.0), -1
    )
    true_probability = jnp.take_along_axis(p, labels[:, None], -1)[:, 0]
    weight = 1.0000001 - true_probability
    return boosted_cross_entropy(adversarial_logits, labels) + beta * kl * weight
