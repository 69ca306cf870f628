"""The jitted, data-parallel train and eval steps: jit(shard_map) over a 1-D 'data' mesh.

Each device sees its slice of the batch ([B / devices, ...]) and of the radii, reads like pmap
code, and returns new radii sharded the same way. Cross-device averaging: BatchNorm statistics
of the training pass use `lax.pmean` (axis_name='data'); parameter gradients are summed over
devices by shard_map's autodiff (replicated params are implicitly broadcast, and that broadcast
transposes to a psum), so each device's loss is its share of the global mean,
sum(loss_i) / global_batch.

How BatchNorm normalises in the attack passes (clean check, radius probes, training attack) is
one policy object, config.attack_batchnorm (iaat_jax.attack_batchnorm): 'running' (the default
config), 'global' (the paper configs: the authors' batch statistics, with
attack_batchnorm_updates the authors' count of running-statistics updates, 34 per IAAT step
after warm-up) or 'local' (each device's own batch, no collective in the attacks).

TRADES (iaat_jax.trades) attacks the KL term with the same policy and trains on a clean and an
adversarial train-mode pass, in that order (the authors' code has a second clean pass, which
changes only the running statistics' update count).
"""

import functools
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from iaat_jax import attack_batchnorm, attacks, epsilon, experiment, trades
from iaat_jax.experiment import TrainState
from iaat_jax.sharding import DATA_AXIS

# Streams of per-example randomness, folded into the step key before the example id.
_TRAIN_ATTACK, _PROBE_PREV, _PROBE_HIGH, _EVAL_ATTACK = range(4)
DeviceBatch = dict[str, jax.Array]  # image [B, H, W, C], label [B], id [B] int32, sharded


def _correct(logits_fn: Callable, images: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """[B] bool: the model (as `logits_fn`) classifies each example correctly."""
    return jnp.argmax(logits_fn(images), axis=-1) == labels


def _global_mean(values: jnp.ndarray, global_count) -> jnp.ndarray:
    return jax.lax.psum(values.astype(jnp.float32).sum(), DATA_AXIS) / global_count


def ramped_epsilon(config: ml_collections.ConfigDict, step, ramp_steps: int):
    """config.epsilon at `step` (0-based), reached by a linear ramp from epsilon / ramp_steps
    over the first `ramp_steps` steps (0: no ramp): PGD-AT's radius, IAAT's warm-up radius."""
    if not ramp_steps:
        return jnp.float32(config.epsilon)
    return config.epsilon * jnp.minimum(1.0, (step + 1) / ramp_steps).astype(jnp.float32)


def _device_train_step(
    model: nn.Module, config: ml_collections.ConfigDict, adapting: bool, ramp_steps: int
) -> Callable:
    """The per-device step of config.method; for IAAT, its warm-up or (adapting) its
    adaptation phase."""
    steps, step_min = config.attack_steps, config.attack_step_min
    probe_steps = config.probe_steps or steps
    unroll = experiment.unroll_attacks(config)
    batchnorm = attack_batchnorm.attack_batchnorm(config, model)

    def device_step(state: TrainState, batch: DeviceBatch, eps_prev, key):
        images, labels, ids = batch["image"], batch["label"], batch["id"]
        key = jax.random.fold_in(key, state.step)  # a fresh key per step, replayable on resume
        global_batch = images.shape[0] * jax.lax.axis_size(DATA_AXIS)

        def correct(x, stats):  # ([B] bool: classified correctly, statistics after the pass)
            logits, stats = batchnorm.forward(state.params, x, stats)
            return jnp.argmax(logits, axis=-1) == labels, stats

        def attacked(
            radius,
            stream,
            stats,
            num_steps=steps,
            loss=attacks.cross_entropy,
            targets=labels,
            start=None,
        ):
            """PGD at radius [B] on loss(logits, targets); start(images, keys) replaces the
            uniform random start. Returns (adversarial images, statistics after the passes)."""

            def loss_fn(x, targets, stats):
                logits, stats = batchnorm.forward(state.params, x, stats)
                return loss(logits, targets), stats

            size = attacks.pgd_step_size(radius, num_steps, step_min)
            keys = attacks.example_keys(key, stream, ids)
            first = None if start is None else start(images, keys)
            return attacks.pgd_attack_carrying(
                loss_fn, images, targets, radius, size, num_steps, keys, stats, unroll, first
            )

        def trades_attacked(radius, stats):  # PGD on KL(clean || adversarial), Gaussian start
            clean_logits, stats = batchnorm.forward(state.params, images, stats)
            return attacked(
                radius,
                _TRAIN_ATTACK,
                stats,
                loss=lambda logits, clean: trades.kl_divergence(clean, logits),
                targets=jax.lax.stop_gradient(clean_logits),
                start=trades.gaussian_start,
            )

        # the authors' order of passes (it sets the weights of the running-statistics updates):
        # clean check (IAAT only), both probe attacks, both probe checks, training attack, loss
        stats, clean_correct = batchnorm.begin(state.batch_stats), None
        if config.method == "iaat" or (config.method == "pgd" and config.pgd_clean_check):
            clean_correct, checked_stats = correct(images, stats)
            stats = checked_stats if config.method == "iaat" else stats
        if config.method == "clean":
            radius = eps_prev
        elif config.method in ("pgd", "trades"):
            radius = jnp.full_like(eps_prev, ramped_epsilon(config, state.step, ramp_steps))
        elif not adapting:
            warmup_epsilon = ramped_epsilon(config, state.step, ramp_steps)
            radius = epsilon.warmup_radius(clean_correct, warmup_epsilon)
        else:
            at_prev, stats = attacked(eps_prev, _PROBE_PREV, stats, probe_steps)
            at_high, stats = attacked(eps_prev + config.gamma, _PROBE_HIGH, stats, probe_steps)
            prev_correct, stats = correct(at_prev, stats)
            high_correct, stats = correct(at_high, stats)
            radius = epsilon.adapted_radius(
                eps_prev,
                clean_correct,
                prev_correct,
                high_correct,
                gamma=config.gamma,
                beta=config.beta,
                eps_max=config.epsilon_max,
            )
        inputs = images
        if config.method == "trades":
            inputs, stats = trades_attacked(radius, stats)
        elif config.method != "clean":
            inputs, stats = attacked(radius, _TRAIN_ATTACK, stats)
        stats = batchnorm.settle(stats)

        def training_loss(params):
            def forward(x, batch_stats):  # train mode: global batch statistics, updated
                variables = {"params": params, "batch_stats": batch_stats}
                logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
                return logits, updates["batch_stats"]

            clean_logits = None
            if config.method == "trades":  # clean pass first, then the adversarial one
                clean_logits, new_stats = forward(images, stats)
                logits, new_stats = forward(inputs, new_stats)
                losses = trades.trades_loss(clean_logits, logits, labels, config.trades_beta)
            else:
                logits, new_stats = forward(inputs, stats)
                losses = attacks.cross_entropy(logits, labels)
            return losses.sum() / global_batch, (logits, new_stats, clean_logits)

        (loss, (logits, new_stats, clean_logits)), grads = jax.value_and_grad(
            training_loss, has_aux=True
        )(state.params)
        new_state = state.apply_gradients(grads=grads, batch_stats=new_stats)
        if clean_logits is not None:  # TRADES: the training pass's clean half is the check
            clean_correct = jnp.argmax(clean_logits, axis=-1) == labels
        metrics = {
            "train_loss": jax.lax.psum(loss, DATA_AXIS),
            "train_accuracy": _global_mean(jnp.argmax(logits, -1) == labels, global_batch),
            "batch_epsilon_mean": _global_mean(radius, global_batch),
        }
        if config.method == "clean":  # the training pass is the clean check
            metrics["train_clean_accuracy"] = metrics["train_accuracy"]
        elif clean_correct is not None:
            metrics["train_clean_accuracy"] = _global_mean(clean_correct, global_batch)
        return new_state, radius, metrics

    return device_step


class TrainStep:
    """`step(state, batch, eps_prev, key, epoch) -> (state, eps, metrics)`, jitted over a mesh.

    batch: image [B, H, W, C] float32, label [B] int32, id [B] int32, sharded on 'data';
    eps_prev [B] sharded the same way; key (the run's base key, into which the step number is
    folded) replicated; epoch a Python int. State and eps_prev are donated. The radius ramp of
    PGD-AT and of IAAT's warm-up, if any, runs over config.epsilon_ramp_epochs *
    steps_per_epoch steps.

    IAAT has two programs, warm-up and adaptation, chosen on the host by the epoch: a lax.cond
    between them ran the attacks inside it 3.7x slower on CPU (README "Performance"). The first
    call compiles every program that `epochs` will need, so the end of warm-up never waits for a
    compiler.
    """

    def __init__(
        self,
        model: nn.Module,
        config: ml_collections.ConfigDict,
        mesh: Mesh,
        epochs=None,
        steps_per_epoch: int = 0,
    ):
        self.warmup_epochs = config.warmup_epochs if config.method == "iaat" else 0
        ramp_steps = 0
        if config.method in ("pgd", "iaat", "trades") and config.epsilon_ramp_epochs:
            if not steps_per_epoch:
                raise ValueError("config.epsilon_ramp_epochs needs the steps_per_epoch")
            ramp_steps = max(int(config.epsilon_ramp_epochs * steps_per_epoch), 1)
        replicated, by_row = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
        epochs = (0, self.warmup_epochs) if epochs is None else epochs  # None: every program
        self.jitted = {}
        for adapting in sorted({self.adapting(epoch) for epoch in epochs}):
            sharded = jax.shard_map(
                _device_train_step(model, config, adapting, ramp_steps),
                mesh=mesh,
                in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P()),
                out_specs=(P(), P(DATA_AXIS), P()),
            )
            # out_shardings as `replicate` and `shard_rows` place the inputs: P() and not
            # shard_map's equivalent P(None, ...), which the jit cache would take for new input
            # types and compile again for at the second step
            self.jitted[adapting] = jax.jit(
                sharded, donate_argnums=(0, 2), out_shardings=(replicated, by_row, replicated)
            )
        self.compiled: dict[bool, Callable] = {}

    def adapting(self, epoch: int) -> bool:
        """Whether `epoch` runs the IAAT adaptation program (False: warm-up, PGD or clean)."""
        return epoch >= self.warmup_epochs

    def compile(self, state, batch, eps_prev, key) -> float:
        """Compile every program ahead of its first use; returns the seconds it took."""
        started = time.perf_counter()
        for adapting, jitted in self.jitted.items():
            if adapting not in self.compiled:
                self.compiled[adapting] = jitted.lower(state, batch, eps_prev, key).compile()
        return time.perf_counter() - started

    def __call__(self, state, batch, eps_prev, key, epoch: int):
        if not self.compiled:
            self.compile(state, batch, eps_prev, key)
        program = self.compiled.get(self.adapting(epoch))
        if program is None:
            raise ValueError(f"epoch {epoch} is outside the epochs this step was built for")
        return program(state, batch, eps_prev, key)


def make_train_step(
    model: nn.Module,
    config: ml_collections.ConfigDict,
    mesh: Mesh,
    epochs=None,
    steps_per_epoch: int = 0,
) -> TrainStep:
    """The train step of `config` for `epochs` (None: every epoch; see TrainStep); the radius
    ramp (config.epsilon_ramp_epochs) counts steps with `steps_per_epoch`."""
    return TrainStep(model, config, mesh, epochs, steps_per_epoch)


@functools.cache  # one compiled program per (model, mesh, loss, steps): every epoch reuses it
def make_eval_step(
    model: nn.Module, mesh: Mesh, loss: str, num_steps: int, unroll: bool = False
) -> Callable:
    """`eval_step(state, batch, radius, step_size, key) -> {clean, robust}` flags [B].

    PGD-`num_steps` on the `loss` (a key of attacks.ATTACK_LOSSES) at a radius and step size per
    example [B], BatchNorm on running statistics. Flags come back sharded like the batch: clean
    is 1.0 where the clean example is classified correctly; robust is 1.0 only where it is AND
    no point the attack visited (random start, every iterate, the last) is misclassified, as
    AutoAttack counts.
    """
    attack_loss = attacks.ATTACK_LOSSES[loss]

    def device_eval(state: TrainState, batch: DeviceBatch, radius, step_size, key):
        images, labels = batch["image"], batch["label"]
        logits_fn = lambda x: model.apply(state.variables, x, train=False)

        def loss_noting_mistakes(x, y, fooled):  # the loss, and which iterates are misclassified
            logits = logits_fn(x)
            return attack_loss(logits, y), fooled | (jnp.argmax(logits, axis=-1) != y)

        clean = _correct(logits_fn, images, labels)
        adversarial, fooled = attacks.pgd_attack_carrying(
            loss_noting_mistakes,
            images,
            labels,
            radius,
            step_size,
            num_steps,
            attacks.example_keys(key, _EVAL_ATTACK, batch["id"]),
            jnp.zeros_like(clean),
            unroll,
        )
        robust = clean & ~fooled & _correct(logits_fn, adversarial, labels)
        return {"clean": clean.astype(jnp.float32), "robust": robust.astype(jnp.float32)}

    sharded = jax.shard_map(
        device_eval,
        mesh=mesh,
        in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS), P()),
        out_specs=P(DATA_AXIS),
    )
    return jax.jit(sharded)
