"""How BatchNorm normalises in a train step's attack passes (clean check, radius probes,
training attack): one policy object that the step calls, config.attack_batchnorm.

- 'running': the running statistics (inference mode). An example's attack and radius depend
  only on that example and the model; the attack passes need no cross-device traffic.
- 'global': statistics of the global batch (train mode, averaged over the 'data' axis): the
  authors' single-GPU behaviour, the same on any device count, at the price of a pmean per
  BatchNorm layer forward and a psum backward in every attack iteration.
- 'local': each device's own batch statistics (train mode, no averaging), as the authors'
  `nn.DataParallel` normalises on several GPUs; no collective in the attack passes.

With config.attack_batchnorm_updates ('global' or 'local') every attack pass also updates the
running statistics, as a PyTorch train-mode forward does; 'local' then averages the running
statistics over devices once, after the last attack pass, so that every device trains from
the same ones. The training pass itself always normalises with the global batch.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from iaat_jax.method import registry
from iaat_jax.run.sharding import DATA_AXIS

POLICIES = ("running", "global", "local")


@dataclasses.dataclass(frozen=True)
class AttackBatchNorm:
    """`forward(params, x, stats) -> (logits, stats)` for attack passes, which start from the
    statistics `begin(stats)` gives; `settle(stats)` gives those the training pass starts from."""

    model: nn.Module  # the model whose BatchNorm layers normalise as the policy says
    train_mode: bool  # batch statistics (True) or running ones (False)
    updates: bool  # attack passes update the running statistics
    average_updates: bool  # average the updated statistics over devices once, in settle

    def forward(self, params, images: jnp.ndarray, stats) -> tuple[jnp.ndarray, object]:
        """Logits of the attack passes' model, and the running statistics after the pass."""
        variables = {"params": params, "batch_stats": stats}
        if not self.train_mode:
            return self.model.apply(variables, images, train=False), stats
        logits, changed = self.model.apply(variables, images, train=True, mutable=["batch_stats"])
        return logits, changed["batch_stats"] if self.updates else stats

    def begin(self, stats):
        """The running statistics the attack passes start from: marked as varying over devices
        where the passes update them locally, so a PGD loop can carry them."""
        if self.average_updates:
            return jax.lax.pcast(stats, DATA_AXIS, to="varying")
        return stats

    def settle(self, stats):
        """The running statistics after the attack passes, identical on every device."""
        if self.average_updates:
            return jax.lax.pmean(stats, DATA_AXIS)
        return stats


def attack_batchnorm(config: ml_collections.ConfigDict, model: nn.Module) -> AttackBatchNorm:
    """The policy of config.attack_batchnorm for `model` (whose BatchNorm averages over the
    'data' axis in train mode)."""
    policy, updates = config.attack_batchnorm, bool(config.attack_batchnorm_updates)
    if policy == "running" or not registry.method_of(config).attack_passes:  # clean training
        return AttackBatchNorm(model, train_mode=False, updates=False, average_updates=False)
    if policy == "global":
        return AttackBatchNorm(model, train_mode=True, updates=updates, average_updates=False)
    if policy == "local":
        own_batch = model.clone(bn_axis_name=None) if hasattr(model, "bn_axis_name") else model
        return AttackBatchNorm(own_batch, train_mode=True, updates=updates, average_updates=updates)
    raise ValueError(f"unknown attack_batchnorm {policy!r}: use one of {', '.join(POLICIES)}")
