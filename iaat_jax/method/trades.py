"""TRADES (Zhang et al., ICML 2019): the clean cross-entropy plus beta times the KL divergence
between the model's clean and adversarial predictions, the adversarial point found by PGD on
that KL divergence from a small Gaussian start (the authors' `trades.py`).

Pure functions; the train step (iaat_jax.method.step) runs the attack and the loss.
"""

import jax
import jax.numpy as jnp

from iaat_jax.attacks import pgd

START_NOISE = 0.001  # standard deviation of the authors' Gaussian start around the clean image


def kl_divergence(clean_logits: jnp.ndarray, logits: jnp.ndarray) -> jnp.ndarray:
    """[B]: KL(softmax(clean_logits) || softmax(logits)) = sum_c p_c (log p_c - log q_c), the
    per-example term of PyTorch's KLDivLoss(log_softmax(logits), softmax(clean_logits)) with
    reduction 'sum'."""
    log_p = jax.nn.log_softmax(clean_logits.astype(jnp.float32), axis=-1)
    log_q = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def gaussian_start(images: jnp.ndarray, keys: jax.Array) -> jnp.ndarray:
    """The attack's start: each image plus N(0, START_NOISE^2) noise per pixel, not projected
    (as the authors' code: the first step's projection brings it into the ball and [0, 1]).
    `keys` [B] holds one PRNG key per example."""
    noise = jax.vmap(lambda k: jax.random.normal(k, images.shape[1:], jnp.float32))(keys)
    return images.astype(jnp.float32) + START_NOISE * noise


def trades_loss(
    clean_logits: jnp.ndarray,
    adversarial_logits: jnp.ndarray,
    labels: jnp.ndarray,
    beta: float,
) -> jnp.ndarray:
    """[B]: CE(clean_logits, y) + beta * KL(softmax(clean_logits) || softmax(adversarial_logits)).
    Its mean over the batch is the authors' loss; gradients flow through both predictions."""
    clean_loss = pgd.cross_entropy(clean_logits, labels)
    return clean_loss + beta * kl_divergence(clean_logits, adversarial_logits)
