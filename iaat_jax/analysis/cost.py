"""What a run costs before it starts: FLOPs of its training and evaluation, hours on a named
accelerator, and the disk its checkpoints take (`launch/reproduce.sh SET OUT --plan`).

FLOPs come from XLA's cost analysis, as the benchmark's (`python -m iaat_jax.benchmark
--flops_only`): a train step's is `benchmark.step_cost` of the config's own step (attacks
unrolled, every device), one program per phase (IAAT's warm-up and adaptation). Evaluation is
counted from the model's forward pass and its input gradient per image, once per attack
iteration: the per-epoch PGD check during training, then `--mode=evaluate`'s sweep and attack
suite. The suite is an upper bound: every test example is counted through every attack, where
AutoAttack runs a later attack only on the examples the earlier ones left robust.

Hours = FLOPs / (chips x the chip's dense bf16 peak x utilisation). The utilisation is an
assumption: by default what ResNet-50 reaches in MLPerf (below), or the caller's; the benchmark
measures the real one on the device (its `mfu`), which is the figure to plan with once known.
"""

import dataclasses
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from iaat_jax import benchmark
from iaat_jax.attacks import autoattack, pgd
from iaat_jax.data import fake_data
from iaat_jax.evaluation import evaluate
from iaat_jax.method import step as step_lib
from iaat_jax.method.epsilon import EpsilonTable
from iaat_jax.run import experiment, sharding, train

# Accelerators by the names gcloud and vendors give them: an H100 GPU ('h100', 'h100x8' for
# eight), a TPU slice ('v4-8': v2-v5p names count TensorCores, 2 per chip; v5e/v6e count chips).
_GPU = re.compile(r"(h100|h200|a100)(?:x(\d+))?")
_TPU = re.compile(r"(v2|v3|v4|v5p|v5litepod|v6e)-(\d+)")
_CHIP = {
    "h100": "H100",
    "h200": "H200",
    "a100": "A100",
    "v2": "TPU v2",
    "v3": "TPU v3",
    "v4": "TPU v4",
    "v5p": "TPU v5p",
    "v5litepod": "TPU v5 lite",
    "v6e": "TPU v6",
}


# The share of the peak assumed where the caller states none: ResNet-50 training in mixed
# precision in MLPerf results, FLOPs counted as XLA counts them (2 per multiply-add, 3 x 8.2
# GFLOPs per image): 8x H100 (training_results_v3.0, NVIDIA dgxh100_ngc23.04_mxnet, about
# 7,006 images/s per GPU) 0.17; 8x A100 (v3.0, Dell XE9680x8A100, 3,576) 0.28; TPU v4-128
# (v1.0, Google tpu-v4-128-TF, 3,413 per chip) 0.31, also assumed for the other TPUs.
_UTILISATION = {"h100": 0.17, "h200": 0.17, "a100": 0.28}
_TPU_UTILISATION = 0.31


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """A machine to plan for: its chips, each chip's dense bf16 peak (FLOP/s) and the share
    of it assumed to be reached."""

    name: str
    chips: int
    chip_peak: float
    utilisation: float

    @property
    def peak(self) -> float:
        return self.chips * self.chip_peak


def accelerator(name: str, utilisation: float | None = None) -> Accelerator:
    """The accelerator called `name`, e.g. 'h100', 'h100x8', 'v4-8', 'v5litepod-16', at
    `utilisation` of its peak (None: the MLPerf-derived default above)."""
    if match := _GPU.fullmatch(name):
        chips = int(match.group(2) or 1)
        assumed = _UTILISATION[match.group(1)]
    elif match := _TPU.fullmatch(name):
        count = int(match.group(2))
        chips = count if match.group(1) in ("v5litepod", "v6e") else max(count // 2, 1)
        assumed = _TPU_UTILISATION
    else:
        raise ValueError(
            f"unknown accelerator '{name}': use h100, h200, a100 (x8 for eight, e.g. h100x8) or "
            "a TPU slice such as v4-8, v5p-8, v5litepod-8, v6e-8"
        )
    if chips < 1:
        raise ValueError(f"accelerator '{name}' has no chips")
    if utilisation is not None and not 0 < utilisation <= 1:
        raise ValueError(f"utilisation {utilisation} is not in (0, 1], e.g. 0.3")
    peak = benchmark.PEAK_FLOPS[_CHIP[match.group(1)]]
    return Accelerator(name, chips, peak, utilisation or assumed)


@dataclasses.dataclass(frozen=True)
class RunCost:
    """One run's steps, FLOPs (all devices) and checkpoint disk."""

    train_steps: int
    flops_per_step: dict[str, float]  # by phase: 'warm-up' (IAAT's) and 'main'
    steps_per_phase: dict[str, int]
    train_flops: float  # the steps
    epoch_eval_flops: float  # the per-epoch clean and PGD check on the evaluation split
    final_eval_flops: float  # --mode=evaluate: the sweep and the attack suite (upper bound)
    checkpoint_bytes: int  # config.checkpoints_to_keep train states and tables, the table

    @property
    def flops(self) -> float:
        return self.train_flops + self.epoch_eval_flops + self.final_eval_flops

    def hours(self, machine: Accelerator) -> float:
        """Wall-clock hours on `machine` at its utilisation."""
        return self.flops / (machine.peak * machine.utilisation) / 3600


def image_flops(model, state, image_shape: tuple[int, ...]) -> tuple[float, float]:
    """XLA's FLOPs per image of the eval-mode forward pass and of the cross-entropy's
    gradient with respect to the input (forward and backward): one attack iteration."""
    images = jnp.zeros((1, *image_shape), jnp.float32)
    labels = jnp.zeros((1,), jnp.int32)
    variables = jax.tree.map(np.asarray, state.variables)

    def forward(x):
        return model.apply(variables, x, train=False)

    def input_gradient(x):
        return jax.grad(lambda x: pgd.cross_entropy(forward(x), labels).sum())(x)

    def flops(function) -> float:
        cost = jax.jit(function).lower(images).cost_analysis()
        return float((cost[0] if isinstance(cost, list | tuple) else cost)["flops"])

    return flops(forward), flops(input_gradient)


def final_eval_iterations(
    config: ml_collections.ConfigDict, num_classes: int
) -> tuple[float, float]:
    """(input gradients, forward passes) per test example of `--mode=evaluate`: the sweep
    (each PGD run: a clean pass, its steps, a check of the last iterate; radius 0 reuses them),
    then the suite with every example through every attack (an upper bound)."""
    gradients = forwards = 0.0
    sweep = evaluate.sweep_attacks(config)
    for attack in [a for a in sweep if a.epsilon > 0] or sweep[:1]:
        gradients += attack.restarts * attack.steps
        forwards += attack.restarts * 2
    suite = autoattack.SUITES[config.eval_suite] if config.eval_suite else ()
    for _ in evaluate.suite_epsilons(config):
        for attack in suite:
            runs = attack.budget(num_classes).get("targets", 1)
            if attack.name == "square":
                forwards += attack.iterations
            else:  # an APGD or FAB iteration: a gradient, FAB's also a forward for its step
                gradients += runs * attack.iterations
                forwards += runs * attack.iterations * (attack.name == "fab-t")
    return gradients, forwards


def run_cost(config: ml_collections.ConfigDict) -> RunCost:
    """The cost of training `config` and evaluating it with its own evaluation settings.

    It builds the model and lowers (never compiles or runs) its train step on fake data of
    the dataset's shapes, so it needs neither the dataset nor an accelerator."""
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.fake_data = True
    data = fake_data.create_fake_source(config)
    mesh = sharding.make_mesh()
    parts = experiment.create_experiment(config, data, mesh)
    batch = next(data.train_epoch(0))
    table = EpsilonTable(data.num_train, np.full(data.num_train, config.epsilon, np.float32))
    args = benchmark.step_inputs(parts, batch, table, mesh)
    total = train.planned_steps(config, data)
    warmup_epochs = step_lib.make_train_step(
        parts.model, config, mesh, (0,), data.steps_per_epoch
    ).warmup_epochs
    warmup = min(warmup_epochs * data.steps_per_epoch, total)
    steps = {step_lib.WARM_UP: warmup, step_lib.MAIN: total - warmup}
    epochs = {step_lib.WARM_UP: 0, step_lib.MAIN: warmup_epochs}
    per_step = {
        phase: benchmark.step_cost(parts.model, config, mesh, args, epoch)["flops_per_step"]
        for phase, epoch in epochs.items()
        if steps[phase]
    }
    forward, gradient = image_flops(parts.model, parts.state, data.spec.image_shape)
    epochs_run = -(-total // data.steps_per_epoch)  # each epoch ends with the check
    # the real split's size (fake data evaluates one batch), or the held-out tail's
    num_eval = config.get("validation_examples", 0) or data.spec.num_eval
    epoch_eval = epochs_run * num_eval * (config.eval_attack_steps * gradient + 2 * forward)
    gradients, forwards = final_eval_iterations(config, data.spec.num_classes)
    state_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(parts.state))
    table_bytes = table.values.nbytes
    return RunCost(
        train_steps=total,
        flops_per_step=per_step,
        steps_per_phase={phase: count for phase, count in steps.items() if count},
        train_flops=sum(per_step[phase] * steps[phase] for phase in per_step),
        epoch_eval_flops=float(epoch_eval),
        final_eval_flops=float(num_eval * (gradients * gradient + forwards * forward)),
        # each checkpoint holds the state and the table; the table is also exported
        checkpoint_bytes=config.checkpoints_to_keep * (state_bytes + table_bytes) + table_bytes,
    )
