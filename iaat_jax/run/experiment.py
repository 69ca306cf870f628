"""What a config builds, for training and evaluation alike: the host's data source, the model,
the optimizer with its learning-rate schedule, and the fresh replicated train state."""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state
from jax.sharding import Mesh

from iaat_jax import models
from iaat_jax.data.datasets import HostInput
from iaat_jax.run import sharding


class TrainState(train_state.TrainState):
    """Parameters, optimizer state and step, plus BatchNorm running statistics."""

    batch_stats: Any

    @property
    def variables(self) -> dict:
        """What `model.apply` takes: parameters and BatchNorm statistics."""
        return {"params": self.params, "batch_stats": self.batch_stats}


def data_source(config: ml_collections.ConfigDict) -> HostInput:
    """This host's input: fake batches (numpy only) or TFDS (TensorFlow imported only here)."""
    if config.fake_data:
        from iaat_jax.data import fake_data

        return fake_data.create_fake_source(config, jax.process_index(), jax.process_count())
    from iaat_jax.data import input_pipeline

    return input_pipeline.create_data_source(config, jax.process_index(), jax.process_count())


def compute_dtype(config: ml_collections.ConfigDict) -> jnp.dtype:
    """bfloat16 where config.half_precision says so (unset: on TPU and GPU), else float32."""
    half = config.half_precision
    if half is None:
        half = jax.default_backend() in ("tpu", "gpu")
    return jnp.bfloat16 if half else jnp.float32


def unroll_attacks(config: ml_collections.ConfigDict) -> bool:
    """Whether PGD loops are unrolled: config.attack_unroll, unset: on CPU only.

    On CPU an XLA while loop around a convolutional network ran 5-8x slower than the same steps
    unrolled; on GPU and TPU a loop iteration costs microseconds against milliseconds of model,
    and unrolling would multiply compile time.
    """
    if config.attack_unroll is None:
        return jax.default_backend() == "cpu"
    return bool(config.attack_unroll)


def create_model(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    """config.model with BatchNorm statistics averaged over the 'data' mesh axis."""
    return models.create_model(config.model, num_classes, compute_dtype(config), sharding.DATA_AXIS)


def learning_rate_schedule(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.Schedule:
    """Per-step rate: optional linear warm-up over lr_warmup_epochs, then 'cosine',
    'piecewise' (x lr_decay at the epochs lr_boundaries) or 'constant'."""
    warmup = int(config.lr_warmup_epochs * steps_per_epoch)
    total = max(config.num_epochs * steps_per_epoch - warmup, 1)
    if config.lr_schedule == "cosine":
        main = optax.cosine_decay_schedule(config.learning_rate, total)
    elif config.lr_schedule == "piecewise":
        boundaries = {
            int(epoch * steps_per_epoch) - warmup: config.lr_decay for epoch in config.lr_boundaries
        }
        main = optax.piecewise_constant_schedule(config.learning_rate, boundaries)
    else:
        main = optax.constant_schedule(config.learning_rate)
    if not warmup:
        return main
    ramp = optax.linear_schedule(0.0, config.learning_rate, warmup)
    return optax.join_schedules([ramp, main], [warmup])


def create_optimizer(
    config: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    """'sgd': momentum SGD with coupled weight decay (PyTorch-style, as the reference);
    'adamw': Adam with decoupled weight decay (Loshchilov and Hutter)."""
    if config.optimizer == "adamw":
        return optax.adamw(schedule, weight_decay=config.weight_decay)
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay),
        optax.sgd(schedule, momentum=config.momentum),
    )


def create_train_state(
    model: nn.Module,
    config: ml_collections.ConfigDict,
    image_shape: tuple[int, ...],
    key: jax.Array,
    schedule: optax.Schedule,
) -> TrainState:
    """Fresh float32 parameters, BatchNorm statistics and optimizer state (on the host)."""
    variables = model.init(key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=create_optimizer(config, schedule),
    )


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A run's model, its fresh replicated state, base RNG key and learning-rate schedule."""

    model: nn.Module
    state: TrainState
    base_key: jax.Array
    schedule: optax.Schedule


def create_experiment(config: ml_collections.ConfigDict, data: HostInput, mesh: Mesh) -> Experiment:
    """The model and the fresh state of `config` on `mesh` (before any checkpoint is restored)."""
    model = create_model(config, data.spec.num_classes)
    init_key, base_key = jax.random.split(jax.random.key(config.seed))
    schedule = learning_rate_schedule(config, data.steps_per_epoch)
    state = create_train_state(model, config, data.spec.image_shape, init_key, schedule)
    return Experiment(model, sharding.replicate(state, mesh), base_key, schedule)
