"""iaat_jax: Instance Adaptive Adversarial Training in JAX/Flax."""
