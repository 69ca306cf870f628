"""The jitted, data-parallel train and eval steps: jit(shard_map) over a 1-D 'data' mesh.

Each device sees its slice of the batch ([B / devices, ...]) and of the radii, reads like pmap
code, and returns new radii sharded the same way. Cross-device averaging: BatchNorm statistics
of the training pass use `lax.pmean` (axis_name='data'); parameter gradients are summed over
devices by shard_map's autodiff (replicated params are implicitly broadcast, and that broadcast
transposes to a psum), so each device's loss is its share of the global mean,
sum(loss_i) / global_batch.

How BatchNorm normalises in the attack passes (clean check, radius probes, training attack) is
one policy object, config.attack_batchnorm (method/attack_batchnorm.py): 'running' (the
default config), 'global' (the paper configs: the authors' batch statistics, with
attack_batchnorm_updates the authors' count of running-statistics updates, 34 per IAAT step
after warm-up) or 'local' (each device's own batch, no collective in the attacks).

What a step does is its method's (iaat_jax.method.registry): the radius policy, the attack objective
and the training loss, which the step calls through `Passes`. TRADES and MART train on a clean
and an adversarial train-mode pass, in that order (the TRADES authors' code has a second clean
pass, which changes only the running statistics' update count).
"""

import dataclasses
import functools
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from iaat_jax.attacks import pgd
from iaat_jax.method import attack_batchnorm, registry
from iaat_jax.run import experiment
from iaat_jax.run.experiment import TrainState
from iaat_jax.run.sharding import DATA_AXIS

WARM_UP, MAIN = "warm-up", "main"  # the programs of a step: IAAT's warm-up, and the rest
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


@dataclasses.dataclass(frozen=True)
class Passes:
    """One device's forward passes of a step's attack phase, for the method's parts: a
    forward pass, a correctness check and PGD, all with the attack BatchNorm policy and each
    returning the running statistics after it. Noise is keyed by step and example id."""

    config: ml_collections.ConfigDict
    state: TrainState
    batchnorm: attack_batchnorm.AttackBatchNorm
    images: jax.Array
    labels: jax.Array
    ids: jax.Array
    key: jax.Array

    def forward(self, x, stats):
        return self.batchnorm.forward(self.state.params, x, stats)

    def correct(self, x, stats):
        """([B] bool: classified correctly, statistics after the pass)."""
        logits, stats = self.forward(x, stats)
        return jnp.argmax(logits, axis=-1) == self.labels, stats

    def pgd(self, radius, stream, stats, num_steps=None, loss=None, targets=None, start=None):
        """PGD at radius [B] on loss(logits, targets) (default: cross-entropy on the labels);
        start(images, keys) replaces the uniform random start. Returns (adversarial images,
        statistics after the passes)."""
        num_steps = num_steps or self.config.attack_steps
        loss = loss or pgd.cross_entropy
        targets = self.labels if targets is None else targets

        def loss_fn(x, targets, stats):
            logits, stats = self.forward(x, stats)
            return loss(logits, targets), stats

        size = pgd.pgd_step_size(radius, num_steps, self.config.attack_step_min)
        keys = pgd.example_keys(self.key, stream, self.ids)
        first = None if start is None else start(self.images, keys)
        unroll = experiment.unroll_attacks(self.config)
        return pgd.pgd_attack_carrying(
            loss_fn, self.images, targets, radius, size, num_steps, keys, stats, unroll, first
        )


def _device_train_step(
    model: nn.Module, config: ml_collections.ConfigDict, warming_up: bool, ramp_steps: int
) -> Callable:
    """The per-device step of config.method (iaat_jax.method.registry), in the warm-up or the main
    phase of its radius policy: the policy gives the radius (probing as it needs), the
    objective's attack runs at it, the loss trains on its passes."""
    method = registry.method_of(config)
    policy, loss_part = method.policy, method.loss
    batchnorm = attack_batchnorm.attack_batchnorm(config, model)
    # a metric-only clean check for a method whose passes give none (config.pgd_clean_check)
    metric_check = (
        config.pgd_clean_check
        and not policy.needs_clean_check
        and not loss_part.clean_pass
        and method.objective is not registry.NO_ATTACK
    )

    def device_step(state: TrainState, batch: DeviceBatch, eps_prev, key):
        images, labels = batch["image"], batch["label"]
        key = jax.random.fold_in(key, state.step)  # a fresh key per step, replayable on resume
        global_batch = images.shape[0] * jax.lax.axis_size(DATA_AXIS)
        passes = Passes(config, state, batchnorm, images, labels, batch["id"], key)

        # the authors' order of passes (it sets the weights of the running-statistics updates):
        # clean check, both probe attacks, both probe checks, training attack, training passes
        stats, clean_correct = batchnorm.begin(state.batch_stats), None
        if policy.needs_clean_check or metric_check:
            clean_correct, checked_stats = passes.correct(images, stats)
            stats = checked_stats if policy.needs_clean_check else stats
        fixed = ramped_epsilon(config, state.step, ramp_steps)
        radius, stats = policy.radius(
            passes, config, eps_prev, clean_correct, fixed, warming_up, stats
        )
        inputs, stats = method.objective.attack(passes, radius, stats)
        stats = batchnorm.settle(stats)

        def training_loss(params):
            def forward(x, batch_stats):  # train mode: global batch statistics, updated
                variables = {"params": params, "batch_stats": batch_stats}
                logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
                return logits, updates["batch_stats"]

            clean_logits, new_stats = None, stats
            if loss_part.clean_pass:  # the clean pass first, then the adversarial one
                clean_logits, new_stats = forward(images, new_stats)
            logits, new_stats = forward(inputs, new_stats)
            losses = loss_part.per_example(clean_logits, logits, labels, config)
            return losses.sum() / global_batch, (logits, new_stats, clean_logits)

        (loss, (logits, new_stats, clean_logits)), grads = jax.value_and_grad(
            training_loss, has_aux=True
        )(state.params)
        new_state = state.apply_gradients(grads=grads, batch_stats=new_stats)
        if clean_logits is not None:  # the training pass's clean half is the check
            clean_correct = jnp.argmax(clean_logits, axis=-1) == labels
        metrics = {
            "train_loss": jax.lax.psum(loss, DATA_AXIS),
            "train_accuracy": _global_mean(jnp.argmax(logits, -1) == labels, global_batch),
            "batch_epsilon_mean": _global_mean(radius, global_batch),
        }
        if method.objective is registry.NO_ATTACK:  # the training pass is the clean check
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
        policy = registry.method_of(config).policy
        self.warmup_epochs = config.iaat_warmup_epochs if policy.warmup else 0
        ramp_steps = 0
        if policy.ramp and config.epsilon_ramp_epochs:
            if not steps_per_epoch:
                raise ValueError("config.epsilon_ramp_epochs needs the steps_per_epoch")
            ramp_steps = max(int(config.epsilon_ramp_epochs * steps_per_epoch), 1)
        replicated, by_row = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
        epochs = (0, self.warmup_epochs) if epochs is None else epochs  # None: every program
        self.jitted = {}
        for phase in sorted({self.phase(epoch) for epoch in epochs}):
            sharded = jax.shard_map(
                _device_train_step(model, config, phase == WARM_UP, ramp_steps),
                mesh=mesh,
                in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P()),
                out_specs=(P(), P(DATA_AXIS), P()),
            )
            # out_shardings as `replicate` and `shard_rows` place the inputs: P() and not
            # shard_map's equivalent P(None, ...), which the jit cache would take for new input
            # types and compile again for at the second step
            self.jitted[phase] = jax.jit(
                sharded, donate_argnums=(0, 2), out_shardings=(replicated, by_row, replicated)
            )
        self.compiled: dict[str, Callable] = {}

    def phase(self, epoch: int) -> str:
        """The program `epoch` runs: WARM_UP (IAAT's first epochs) or MAIN (every other)."""
        return WARM_UP if epoch < self.warmup_epochs else MAIN

    def compile(self, state, batch, eps_prev, key) -> float:
        """Compile every program ahead of its first use; returns the seconds it took."""
        started = time.perf_counter()
        for phase, jitted in self.jitted.items():
            if phase not in self.compiled:
                self.compiled[phase] = jitted.lower(state, batch, eps_prev, key).compile()
        return time.perf_counter() - started

    def __call__(self, state, batch, eps_prev, key, epoch: int):
        if not self.compiled:
            self.compile(state, batch, eps_prev, key)
        program = self.compiled.get(self.phase(epoch))
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
    attack_loss = pgd.ATTACK_LOSSES[loss]

    def device_eval(state: TrainState, batch: DeviceBatch, radius, step_size, key):
        images, labels = batch["image"], batch["label"]
        logits_fn = lambda x: model.apply(state.variables, x, train=False)

        def loss_noting_mistakes(x, y, fooled):  # the loss, and which iterates are misclassified
            logits = logits_fn(x)
            return attack_loss(logits, y), fooled | (jnp.argmax(logits, axis=-1) != y)

        clean = _correct(logits_fn, images, labels)
        adversarial, fooled = pgd.pgd_attack_carrying(
            loss_noting_mistakes,
            images,
            labels,
            radius,
            step_size,
            num_steps,
            pgd.example_keys(key, pgd.Stream.EVAL_ATTACK, batch["id"]),
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
