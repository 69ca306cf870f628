"""The IAAT radius: the per-example update rule (pure, jittable) and the host-side table.

Rule (Balaji, Goldstein, Hoffman, arXiv 1910.08051, as their release's
trainers/trainer_adaptive.py does it at commit 49f5f14; docs/methods.md gives it in full): during
warm-up the radius is eps_warmup if the clean example is classified correctly and 0 otherwise.
After warm-up, with eps_prev from the table and probes at eps_prev and eps_prev + gamma:
    eps_new = eps_prev + gamma  if robust at eps_prev + gamma
              eps_prev          elif robust at eps_prev
              eps_prev - gamma  otherwise
    eps_new = max(eps_new * clean_correct, 0)
    eps     = beta * eps_new + (1 - beta) * eps_prev   (then min(eps, eps_max) if a cap is set)
"""

import jax.numpy as jnp
import numpy as np

from iaat_jax.run import files


def warmup_radius(clean_correct: jnp.ndarray, eps_warmup: float) -> jnp.ndarray:
    """Warm-up radius [B]: eps_warmup where the clean example is correct, else 0."""
    return eps_warmup * clean_correct.astype(jnp.float32)


def adapted_radius(
    eps_prev: jnp.ndarray,
    clean_correct: jnp.ndarray,
    robust_at_prev: jnp.ndarray,
    robust_at_high: jnp.ndarray,
    *,
    gamma: float,
    beta: float,
    eps_max: float | None = None,
) -> jnp.ndarray:
    """Post-warm-up radius [B] from the previous radius and the three correctness masks [B]."""
    eps_new = jnp.where(
        robust_at_high, eps_prev + gamma, jnp.where(robust_at_prev, eps_prev, eps_prev - gamma)
    )
    eps_new = jnp.maximum(eps_new * clean_correct.astype(eps_prev.dtype), 0.0)
    eps = beta * eps_new + (1.0 - beta) * eps_prev
    return eps if eps_max is None else jnp.minimum(eps, eps_max)


class EpsilonTable:
    """Radius of every training example, float32 [N_train] on the host, indexed by example id."""

    def __init__(self, num_examples: int, values: np.ndarray | None = None):
        if values is None:
            values = np.zeros(num_examples, np.float32)  # reference: table starts at 0
        values = np.asarray(values, np.float32)
        if values.shape != (num_examples,):
            raise ValueError(
                f"epsilon table has shape {values.shape}, expected ({num_examples},): "
                "the checkpoint belongs to another dataset; use a fresh workdir"
            )
        self.values = values.copy()

    def __len__(self) -> int:
        return self.values.shape[0]

    def _checked(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            bad = ids[(ids < 0) | (ids >= len(self))]
            raise IndexError(
                f"example ids {bad[:5].tolist()} are outside [0, {len(self)}): "
                "the ids do not come from this table's training split"
            )
        return ids

    def gather(self, ids: np.ndarray) -> np.ndarray:
        """Radii [B] of the examples `ids` [B]."""
        return self.values[self._checked(ids)]

    def scatter(self, ids: np.ndarray, radii: np.ndarray) -> None:
        """Write radii [B] for the examples `ids` [B]."""
        self.values[self._checked(ids)] = radii

    def summary(self, percentiles=(10, 50, 90), num_ids: int | None = None) -> dict[str, float]:
        """Mean, max and percentiles of the radii of ids below num_ids (None: all), to log."""
        values = self.values[:num_ids]
        stats = {"epsilon_mean": float(values.mean()), "epsilon_max": float(values.max())}
        for q, value in zip(percentiles, np.percentile(values, percentiles), strict=True):
            stats[f"epsilon_p{q}"] = float(value)
        return stats

    def save_npy(self, path: str) -> None:
        """Export as float32 [N_train] .npy, index = example id; atomic, local or gs://."""
        files.save_npy(path, self.values)
