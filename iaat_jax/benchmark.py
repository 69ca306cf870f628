"""Train-step speed: python -m iaat_jax.benchmark --config=CFG [--config.NAME=VALUE ...].

For each method (clean, pgd, iaat after warm-up) it compiles the train step for the config's
model, shapes and batch on fake data, runs warm-up steps, then times `--steps` steps through the
training loop's own TableFeed (gather by id, step, scatter by id) and prints one JSON line:
method, model, global batch, device kind and count, compile seconds, seconds per step, images per
second, the host's share of a step (gather, transfer, scatter) and the bytes it sends, the
analytic FLOPs per step (XLA cost analysis of the unrolled step, all devices), the cross-device
collectives the step issues (from its HLO: per step as written, and those of the compiled program
after XLA combines them, a loop's body counted once) and, on GPU or TPU, the model FLOP
utilisation.
With --checkpoint_dir=DIR it times checkpoint saves instead: the seconds the loop is blocked
per save (asynchronous, as training saves) against waiting for the commit and table export.
With --attack_passes it times what the evaluation's attacks repeat instead: a forward pass
(Square's query) and a forward pass with the input gradient (an APGD or FAB iteration) at
config.eval_batch_size, in the model's own form and in the form the attacks use
(iaat_jax/models/inference.py): examples per second of each.
"""

import collections
import functools
import json
import re
import sys
import time

import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from iaat_jax import errors
from iaat_jax.data import fake_data
from iaat_jax.method import registry
from iaat_jax.method import step as step_lib
from iaat_jax.method.epsilon import EpsilonTable
from iaat_jax.method.table_feed import TableFeed
from iaat_jax.run import config_checks, experiment, files, sharding, workdir
from iaat_jax.run.checkpoint import Checkpointer

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config; --config.NAME=VALUE overrides.")
flags.DEFINE_list("methods", ["clean", "pgd", "iaat"], "Methods to time, in order.")
flags.DEFINE_integer("steps", 10, "Timed steps per method.")
flags.DEFINE_integer("warmup_steps", 2, "Untimed steps after compiling.")
flags.DEFINE_bool(
    "flops_only",
    False,
    "Only lower each step (no compile, no run): FLOPs per step and the host table's own "
    "gather + scatter time, e.g. for an ImageNet-sized table on a machine without an accelerator.",
)
flags.DEFINE_string(
    "checkpoint_dir",
    None,
    "Instead of steps: time --saves checkpoint saves of the config's train state and table to "
    "this directory (local or gs://): how long the loop is blocked per save when saves are "
    "asynchronous (the training loop's), and when it waits for the commit and the table export.",
)
flags.DEFINE_integer("saves", 3, "With --checkpoint_dir: saves timed in each mode.")
flags.DEFINE_bool(
    "attack_passes",
    False,
    "Instead of steps: examples/s of the attacks' forward and forward-and-input-gradient "
    "passes at the eval batch, in the model's own form and in the attacks' (faster on a CPU).",
)
flags.mark_flags_as_required(["config"])

# Dense bfloat16 peak FLOP/s per chip, from the vendors' data sheets (by device_kind substring).
PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "V100": 125e12,
    "TPU v6": 918e12,
    "TPU v5p": 459e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v4": 275e12,
    "TPU v3": 123e12,
    "TPU v2": 46e12,
}


def peak_flops(device: jax.Device) -> float | None:
    """The chip's bf16 peak in FLOP/s, or None where unknown (and on CPU)."""
    if device.platform == "cpu":
        return None
    return next((peak for kind, peak in PEAK_FLOPS.items() if kind in device.device_kind), None)


COLLECTIVE = re.compile(
    r"stablehlo\.(all_reduce|all_gather|reduce_scatter|collective_permute|all_to_all)\b"
)
COMPILED_COLLECTIVE = re.compile(
    r"= \S+ (all-reduce|all-gather|reduce-scatter|collective-permute|all-to-all)(?:-start)?\("
)


FUNCTION = re.compile(r"func\.func \w+ @([\w.$-]+)")
CALL = re.compile(r"\bcall @([\w.$-]+)")


def collectives(program_text: str, pattern: re.Pattern = COLLECTIVE) -> dict[str, int]:
    """Cross-device collectives in a program's text, by kind ({} where there are none).

    A lowered module calls private functions (a layer, a jitted helper) once per use, so a
    collective inside one counts once per call: the count follows calls from @main down.
    """
    starts = list(FUNCTION.finditer(program_text))
    if not starts:  # a compiled HLO module: one flat text
        return dict(sorted(collections.Counter(pattern.findall(program_text)).items()))
    ends = [match.start() for match in starts[1:]] + [len(program_text)]
    bodies = {m.group(1): program_text[m.end() : end] for m, end in zip(starts, ends, strict=True)}

    @functools.cache
    def total(name: str) -> collections.Counter:
        counts = collections.Counter(pattern.findall(bodies[name]))
        for callee in CALL.findall(bodies[name]):
            counts += total(callee)
        return counts

    return dict(sorted(total("main").items()))


def step_cost(model, config: ml_collections.ConfigDict, mesh, args: tuple, epoch: int = 0) -> dict:
    """FLOPs of one train step on all devices (XLA's count) and the collectives it issues.

    Both come from the step with unrolled attacks, lowered (not compiled) for the purpose: a
    while loop's body is counted once whatever its trip count. The collectives are the
    program's own, one per BatchNorm layer pass or gradient, before XLA combines them.
    """
    unrolled = config.copy_and_resolve_references()
    with unrolled.unlocked():
        unrolled.attack_unroll = True
    train_step = step_lib.make_train_step(model, unrolled, mesh, (epoch,), steps_per_epoch=1)
    lowered = train_step.jitted[train_step.phase(epoch)].lower(*args)
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    found = collectives(lowered.as_text())
    return {
        "flops_per_step": float(cost["flops"]) * mesh.size,
        "collectives_per_step": sum(found.values()),
        "collectives_by_kind": found,
    }


def step_inputs(parts: experiment.Experiment, batch: dict, table: EpsilonTable, mesh) -> tuple:
    """The train step's arguments for `batch` on `mesh`: state, batch, radii by id, key."""
    return (
        parts.state,
        sharding.device_batch(batch, mesh),
        sharding.shard_rows(table.gather(batch["id"]), mesh),
        sharding.replicate(parts.base_key, mesh),
    )


def table_seconds_per_step(num_train: int, batch_size: int, repeats: int = 50) -> float:
    """Host seconds of one step's table work (gather and scatter of a batch of random ids)."""
    table = EpsilonTable(num_train)
    rng = np.random.default_rng(0)
    ids = [rng.choice(num_train, batch_size, replace=False) for _ in range(repeats)]
    started = time.perf_counter()
    for batch_ids in ids:
        table.scatter(batch_ids, table.gather(batch_ids) + 1.0)
    return (time.perf_counter() - started) / repeats


def _method_config(config: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
    method_config = config.copy_and_resolve_references()
    with method_config.unlocked():
        method_config.method = method
        method_config.fake_data = True
    return method_config


def benchmark_method(
    config: ml_collections.ConfigDict,
    method: str,
    steps: int,
    warmup_steps: int,
    flops_only: bool = False,
) -> dict:
    """Compile, warm up and time `steps` train steps of `method`; one result record.

    flops_only: lower the step without compiling or running it; FLOPs and table time only.
    """
    config = _method_config(config, method)
    data = fake_data.create_fake_source(config, jax.process_index(), jax.process_count())
    mesh = sharding.make_mesh()
    parts = experiment.create_experiment(config, data, mesh)
    adaptive = registry.METHODS[method].policy.warmup
    epoch = config.iaat_warmup_epochs if adaptive else 0  # IAAT: after its warm-up
    num_batches = 1 if flops_only else 4
    batches = [batch for _, batch in zip(range(num_batches), data.train_epoch(0), strict=False)]
    table = EpsilonTable(data.num_train, np.full(data.num_train, config.epsilon, np.float32))
    args = step_inputs(parts, batches[0], table, mesh)
    key = args[3]
    device = jax.devices()[0]
    record = {
        "method": method,
        "model": config.model,
        "dataset": config.dataset,
        "global_batch": config.batch_size,
        "attack_steps": config.attack_steps,
        "attack_unroll": experiment.unroll_attacks(config),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "attack_batchnorm": config.attack_batchnorm,
        "probe_steps": config.probe_steps if adaptive else None,
        "bytes_to_device_per_step": sum(
            batches[0][name].nbytes for name in ("image", "label", "id")
        )
        + args[2].nbytes,
        **step_cost(parts.model, config, mesh, args, epoch),
    }
    if flops_only:
        return {
            **record,
            "table_size": data.num_train,
            "table_seconds_per_step": table_seconds_per_step(data.num_train, config.batch_size),
        }
    train_step = step_lib.make_train_step(parts.model, config, mesh, (epoch,), data.steps_per_epoch)
    compile_seconds = train_step.compile(*args)
    compiled = train_step.compiled[train_step.phase(epoch)].as_text()
    record["compiled_collectives"] = collectives(compiled, COMPILED_COLLECTIVE)

    feed, state = TableFeed(train_step, table, mesh, key), parts.state
    for index in range(warmup_steps):
        state, _ = feed.step(state, batches[index % len(batches)], epoch)
    feed.flush()
    jax.block_until_ready(state)
    feed.host_seconds = dict.fromkeys(feed.host_seconds, 0.0)
    started = time.perf_counter()
    for index in range(steps):
        state, _ = feed.step(state, batches[index % len(batches)], epoch)
    feed.flush()
    jax.block_until_ready(state)
    seconds = (time.perf_counter() - started) / steps

    peak = peak_flops(device)
    host = {name: value / steps for name, value in feed.host_seconds.items()}
    return {
        **record,
        "compile_seconds": round(compile_seconds, 3),
        "seconds_per_step": seconds,
        "images_per_second": config.batch_size / seconds,
        "host_fraction": sum(host.values()) / seconds,
        "host_seconds_per_step": host,
        "mfu": record["flops_per_step"] / seconds / (peak * jax.device_count()) if peak else None,
    }


def benchmark_checkpoint(config: ml_collections.ConfigDict, directory: str, saves: int) -> dict:
    """Seconds the loop is blocked per save: asynchronous, and waiting for the commit."""
    config = _method_config(config, config.method)
    data = fake_data.create_fake_source(config, jax.process_index(), jax.process_count())
    parts = experiment.create_experiment(config, data, sharding.make_mesh())
    table = EpsilonTable(data.num_train, np.full(data.num_train, config.epsilon, np.float32))
    checkpoints = Checkpointer(directory, max_to_keep=2)
    seconds = {"async_blocked": [], "async_committed": [], "sync_blocked": []}
    for step in range(1, 2 * saves + 1):
        started = time.perf_counter()
        checkpoints.save(step, parts.state, table.values, parts.base_key, {"step": step})
        returned = time.perf_counter()
        checkpoints.wait()
        table.save_npy(files.join(directory, "epsilon_table.npy"))
        done = time.perf_counter() - started
        if step <= saves:
            seconds["async_blocked"].append(returned - started)
            seconds["async_committed"].append(done)
        else:
            seconds["sync_blocked"].append(done)
    checkpoints.close()
    state_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(parts.state))
    return {
        "what": "checkpoint",
        "model": config.model,
        "dataset": config.dataset,
        "state_megabytes": round(state_bytes / 2**20, 1),
        "table_megabytes": round(table.values.nbytes / 2**20, 1),
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "saves": saves,
        **{f"{name}_seconds": float(np.median(values)) for name, values in seconds.items()},
    }


def benchmark_attack_passes(config: ml_collections.ConfigDict, repeats: int = 50) -> list[dict]:
    """Examples/s of a forward pass and of a forward pass with the input gradient of the
    cross-entropy, on one device at config.eval_batch_size, for each form of the model."""
    from iaat_jax.attacks import pgd
    from iaat_jax.data.datasets import DATASETS
    from iaat_jax.models import create_model, inference

    spec = DATASETS[config.dataset]
    model = create_model(config.model, spec.num_classes, experiment.compute_dtype(config))
    rng = np.random.default_rng(0)
    batch = config.eval_batch_size
    images = rng.uniform(size=(batch, *spec.image_shape)).astype(np.float32)
    labels = rng.integers(0, spec.num_classes, batch)
    variables = model.init(jax.random.key(0), images, train=False)
    forms = {"model": lambda v, x: model.apply(v, x, train=False)}
    if inference.has_fast_form(model):
        forms["attacks"] = inference.evaluation_logits(model)
    records = []
    for form, logits in forms.items():
        loss = lambda v, x, logits=logits: pgd.cross_entropy(logits(v, x), labels).sum()
        passes = {"forward": jax.jit(logits), "input_gradient": jax.jit(jax.grad(loss, 1))}
        record = {"form": form, "model": config.model, "batch": batch}
        for name, program in passes.items():
            jax.block_until_ready(program(variables, images))
            started = time.perf_counter()
            for _ in range(repeats):
                out = program(variables, images)
            jax.block_until_ready(out)
            record[f"{name}_examples_per_second"] = (
                batch * repeats / (time.perf_counter() - started)
            )
        records.append(record)
    return records


def main(argv: list[str]) -> None:
    del argv
    config = FLAGS.config
    try:
        for method in FLAGS.methods:
            config_checks.validate_config(_method_config(config, method), jax.device_count())
    except errors.ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if FLAGS.checkpoint_dir:
        print(json.dumps(benchmark_checkpoint(config, FLAGS.checkpoint_dir, FLAGS.saves)))
        return
    if FLAGS.attack_passes:
        for record in benchmark_attack_passes(config):
            print(json.dumps(record), flush=True)
        return
    for method in FLAGS.methods:
        record = benchmark_method(config, method, FLAGS.steps, FLAGS.warmup_steps, FLAGS.flops_only)
        print(json.dumps(record), flush=True)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, with the config fields' older names renamed (as main's; ml_collections
    reads the --config.NAME overrides from sys.argv itself)."""
    argv = sys.argv[:] = workdir.with_current_flag_names(argv)
    return app.parse_flags_with_usage(argv)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
