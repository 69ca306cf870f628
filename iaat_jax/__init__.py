"""iaat_jax: Instance Adaptive Adversarial Training in JAX/Flax.

A trained run's classifier: `from iaat_jax.trained import load; load(workdir)`.
"""
