"""The jitted, data-parallel train and eval steps: jit(shard_map) over a 1-D 'data' mesh.

Each device sees its slice of the batch ([B / devices, ...]) and of the radii, reads like pmap
code, and returns new radii sharded the same way. Cross-device averaging: BatchNorm statistics
use `lax.pmean` (axis_name='data'); parameter gradients are summed over devices by shard_map's
autodiff (replicated params are implicitly broadcast, and that broadcast transposes to a psum),
so each device's loss is its share of the global mean, sum(loss_i) / global_batch.

BatchNorm during attacks (a deliberate choice, README "BatchNorm in attacks"): by default
(config.attack_batchnorm='running') the clean check, the radius probes and the training attack
use the running statistics, so an example's attack and radius depend only on that example and the
model, not on its batch-mates; results are identical for any device count, and the 30 attack
iterations need no cross-device traffic. 'batch' is the reference's behaviour: batch statistics
averaged over the global batch (running statistics are still updated only by the loss pass).
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from iaat_jax import attacks, epsilon

DATA_AXIS = "data"
# Streams of per-example randomness, folded into the step key before the example id.
_TRAIN_ATTACK, _PROBE_PREV, _PROBE_HIGH, _EVAL_ATTACK = range(4)
Batch = dict[str, jnp.ndarray]


class TrainState(train_state.TrainState):
    """Parameters, optimizer state and step, plus BatchNorm running statistics."""

    batch_stats: Any


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all devices (of every host) with the single axis 'data'."""
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every leaf of `tree` (the same on every host) on every device of `mesh`, all hosts."""
    sharding = NamedSharding(mesh, P())

    def put(leaf):
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(leaf)))
        value = np.asarray(jax.device_get(jnp.asarray(leaf)))  # JAX's dtypes (int -> int32)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map(put, tree)


def shard_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Global arrays sharded along axis 0 from this host's rows [B_local, ...]."""
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    return {
        name: jax.make_array_from_process_local_data(sharding, value)
        for name, value in local_batch.items()
    }


def local_rows(array: jax.Array) -> np.ndarray:
    """This host's rows of a batch-sharded global array, in the order they were given."""
    shards = sorted(array.addressable_shards, key=lambda shard: shard.index[0].start or 0)
    return np.concatenate([np.asarray(shard.data) for shard in shards])


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


def create_train_state(
    model: nn.Module, config: ml_collections.ConfigDict, image_shape, key: jax.Array, schedule
) -> TrainState:
    """Fresh parameters and SGD-momentum state with coupled weight decay (PyTorch-style)."""
    variables = model.init(key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    optimizer = optax.chain(
        optax.add_decayed_weights(config.weight_decay),
        optax.sgd(schedule, momentum=config.momentum),
    )
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=optimizer,
    )


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Per-example cross-entropy [B]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def example_keys(key: jax.Array, stream: int, ids: jnp.ndarray) -> jax.Array:
    """One PRNG key per example [B], from the step key, a stream number and the example id."""
    stream_key = jax.random.fold_in(key, stream)
    return jax.vmap(lambda example_id: jax.random.fold_in(stream_key, example_id))(ids)


def _global_mean(values: jnp.ndarray, global_count) -> jnp.ndarray:
    return jax.lax.psum(values.astype(jnp.float32).sum(), DATA_AXIS) / global_count


def make_train_step(model: nn.Module, config: ml_collections.ConfigDict, mesh: Mesh) -> Callable:
    """`step(state, batch, eps_prev, key, epoch) -> (state, eps, metrics)`, jitted over `mesh`.

    batch: image [B, H, W, C] float32, label [B] int32, id [B] int32, sharded on 'data';
    eps_prev [B] sharded the same way; key (the run's base key, into which the step number is
    folded) and epoch replicated. State is donated.
    """
    steps, step_min = config.attack_steps, config.attack_step_min

    def device_step(state: TrainState, batch: Batch, eps_prev, key, epoch):
        images, labels, ids = batch["image"], batch["label"], batch["id"]
        key = jax.random.fold_in(key, state.step)  # a fresh key per step, replayable on resume
        global_batch = images.shape[0] * jax.lax.axis_size(DATA_AXIS)
        variables = {"params": state.params, "batch_stats": state.batch_stats}

        def logits_fn(x):  # the model as the attacks see it; running statistics left untouched
            if config.attack_batchnorm == "running":
                return model.apply(variables, x, train=False)
            return model.apply(variables, x, train=True, mutable=["batch_stats"])[0]

        def correct(x):
            return jnp.argmax(logits_fn(x), axis=-1) == labels

        def attack(radius, stream):
            size = attacks.pgd_step_size(radius, steps, step_min)
            loss_fn = lambda x, y: cross_entropy(logits_fn(x), y)
            return attacks.pgd_attack(
                loss_fn, images, labels, radius, size, steps, example_keys(key, stream, ids)
            )

        clean_correct = correct(images)
        if config.method == "clean":
            radius = eps_prev
        elif config.method == "pgd":
            radius = jnp.full_like(eps_prev, config.epsilon)
        else:
            radius = jax.lax.cond(
                epoch < config.warmup_epochs,
                lambda: epsilon.warmup_radius(clean_correct, config.epsilon),
                lambda: epsilon.adapted_radius(
                    eps_prev,
                    clean_correct,
                    correct(attack(eps_prev, _PROBE_PREV)),
                    correct(attack(eps_prev + config.gamma, _PROBE_HIGH)),
                    gamma=config.gamma,
                    beta=config.beta,
                    eps_max=config.epsilon_max,
                ),
            )
        inputs = images if config.method == "clean" else attack(radius, _TRAIN_ATTACK)

        def training_loss(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                inputs,
                train=True,
                mutable=["batch_stats"],
            )
            return cross_entropy(logits, labels).sum() / global_batch, (logits, updates)

        (loss, (logits, updates)), grads = jax.value_and_grad(training_loss, has_aux=True)(
            state.params
        )
        new_state = state.apply_gradients(grads=grads, batch_stats=updates["batch_stats"])
        metrics = {
            "train_loss": jax.lax.psum(loss, DATA_AXIS),
            "train_accuracy": _global_mean(jnp.argmax(logits, -1) == labels, global_batch),
            "train_clean_accuracy": _global_mean(clean_correct, global_batch),
            "batch_epsilon_mean": _global_mean(radius, global_batch),
        }
        return new_state, radius, metrics

    sharded = jax.shard_map(
        device_step,
        mesh=mesh,
        in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P(), P()),
        out_specs=(P(), P(DATA_AXIS), P()),
    )
    return jax.jit(sharded, donate_argnums=(0,))


def margin_loss(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Per-example CW margin [B]: best wrong logit minus the true one (> 0: misclassified)."""
    true_logit = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    wrong = jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    return wrong.max(axis=1) - true_logit


ATTACK_LOSSES = {"ce": cross_entropy, "margin": margin_loss}


@functools.cache  # one compiled program per (model, mesh, loss, steps): every epoch reuses it
def make_eval_step(model: nn.Module, mesh: Mesh, loss: str, num_steps: int) -> Callable:
    """`eval_step(state, batch, radius, step_size, key) -> {clean, robust}` flags [B].

    PGD-`num_steps` on the `loss` ('ce' or 'margin') at a radius and step size per example [B],
    BatchNorm on running statistics. batch holds image, label, id; flags come back sharded like
    the batch (1.0 where the clean / attacked example is classified correctly).
    """
    attack_loss = ATTACK_LOSSES[loss]

    def device_eval(state: TrainState, batch: Batch, radius, step_size, key):
        images, labels = batch["image"], batch["label"]
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        logits_fn = lambda x: model.apply(variables, x, train=False)
        adversarial = attacks.pgd_attack(
            lambda x, y: attack_loss(logits_fn(x), y),
            images,
            labels,
            radius,
            step_size,
            num_steps,
            example_keys(key, _EVAL_ATTACK, batch["id"]),
        )

        def correct(x):
            return (jnp.argmax(logits_fn(x), -1) == labels).astype(jnp.float32)

        return {"clean": correct(images), "robust": correct(adversarial)}

    sharded = jax.shard_map(
        device_eval,
        mesh=mesh,
        in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS), P()),
        out_specs=P(DATA_AXIS),
    )
    return jax.jit(sharded)
