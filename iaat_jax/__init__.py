"""iaat_jax: Instance Adaptive Adversarial Training in JAX/Flax.

`iaat_jax.load(workdir, step=None)` returns a trained run's classifier (iaat_jax/trained.py).
"""


def __getattr__(name: str):
    if name == "load":  # imported on first use: `import iaat_jax.x` stays light
        from iaat_jax.trained import load

        return load
    raise AttributeError(f"module 'iaat_jax' has no attribute {name!r}")
