"""train_and_evaluate(config, workdir): the IAAT training loop, evaluation, logging, checkpoints.

Data flows one way: TFDS batch (image, label, id) -> gather eps by id from the host table ->
jitted data-parallel step -> new eps -> scatter by id. Importable from Colab and tests.
"""

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from iaat_jax import evaluate, models, reporting, validation
from iaat_jax import step as step_lib
from iaat_jax.checkpoint import Checkpointer
from iaat_jax.datasets import host_range
from iaat_jax.epsilon import EpsilonTable


def merged_table(table: EpsilonTable, num_train: int) -> np.ndarray:
    """The whole table on every host: each host owns (and updated) its own slice of ids."""
    if jax.process_count() == 1:
        return table.values
    tables = multihost_utils.process_allgather(table.values)  # [hosts, N]
    merged = np.empty_like(table.values)
    for host in range(jax.process_count()):
        start, end = host_range(num_train, host, jax.process_count())
        merged[start:end] = tables[host, start:end]
    return merged


def _train_epoch(train_step, state, table, data, mesh, key, epoch, first_step, last_step, on_log):
    """Steps [first_step, last_step) of `epoch`, replaying the epoch's order to `first_step`."""
    steps_per_epoch = data.steps_per_epoch
    epoch_array = step_lib.replicate(np.int32(epoch), mesh)
    pending = None  # (ids, new eps) of the step in flight: scattered once the next batch is read
    step = first_step
    for index, batch in enumerate(data.train_epoch(epoch)):
        step = epoch * steps_per_epoch + index
        if step < first_step:
            continue
        if step >= last_step:
            break
        if pending is not None:
            table.scatter(pending[0], step_lib.local_rows(pending[1]))
        ids = batch["id"]
        device_batch = step_lib.shard_batch(
            {"image": batch["image"], "label": batch["label"], "id": ids.astype(np.int32)}, mesh
        )
        eps_prev = step_lib.shard_batch({"eps": table.gather(ids)}, mesh)["eps"]
        state, new_eps, metrics = train_step(state, device_batch, eps_prev, key, epoch_array)
        pending = (ids, new_eps)
        on_log(step + 1, metrics)
    if pending is not None:
        table.scatter(pending[0], step_lib.local_rows(pending[1]))
    return state, min(step + 1, last_step)


def data_source(config: ml_collections.ConfigDict):
    """This host's input: fake batches (numpy only) or TFDS (TensorFlow imported only here)."""
    if config.fake_data:
        from iaat_jax import fake_data

        return fake_data.create_fake_source(config, jax.process_index(), jax.process_count())
    from iaat_jax import input_pipeline

    return input_pipeline.create_data_source(config, jax.process_index(), jax.process_count())


def compute_dtype(config: ml_collections.ConfigDict):
    """bfloat16 where config.half_precision says so (unset: on TPU and GPU), else float32."""
    half = config.half_precision
    if half is None:
        half = jax.default_backend() in ("tpu", "gpu")
    return jnp.bfloat16 if half else jnp.float32


def initial_state(config: ml_collections.ConfigDict, data, mesh):
    """(model, fresh replicated state, base RNG key, learning-rate schedule) for `config`.

    Parameters stay float32; the model computes in `compute_dtype(config)`.
    """
    model = models.create_model(
        config.model, data.spec.num_classes, compute_dtype(config), step_lib.DATA_AXIS
    )
    init_key, base_key = jax.random.split(jax.random.key(config.seed))
    schedule = step_lib.learning_rate_schedule(config, data.steps_per_epoch)
    state = step_lib.create_train_state(model, config, data.spec.image_shape, init_key, schedule)
    return model, step_lib.replicate(state, mesh), base_key, schedule


def restore_for_evaluation(config, workdir: epath.Path, state, num_train: int):
    """(restored state, its step) from the newest checkpoint; ConfigError if there is none."""
    checkpoints = Checkpointer(workdir, config.checkpoints_to_keep)
    if checkpoints.latest_step() is None:
        raise validation.ConfigError(
            f"no checkpoint in {workdir}/checkpoints: train first with "
            f"`python -m iaat_jax.main --config=... --workdir={workdir}`"
        )
    state, _, _, _ = checkpoints.restore(state, num_train)
    checkpoints.close()
    return state, int(state.step)


def per_epoch_attack(config: ml_collections.ConfigDict) -> evaluate.Attack:
    """The robust evaluation after each epoch: PGD-k with cross-entropy at config.epsilon."""
    steps = config.eval_attack_steps
    size = evaluate.reference_step_size(config.epsilon, steps, config.attack_step_min)
    return evaluate.Attack("ce", config.epsilon, steps, size)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> step_lib.TrainState:
    """Train `config` in `workdir`, resuming from its latest checkpoint; return the final state."""
    validation.validate_config(config, jax.device_count())
    workdir = validation.check_workdir(workdir)
    data = data_source(config)
    num_train, steps_per_epoch = data.num_train, data.steps_per_epoch
    if steps_per_epoch == 0:
        raise validation.ConfigError(
            f"config.batch_size={config.batch_size} exceeds the {num_train} training examples: "
            "use a smaller batch"
        )
    total_steps = config.num_epochs * steps_per_epoch
    if config.num_train_steps > 0:
        total_steps = min(total_steps, config.num_train_steps)

    mesh = step_lib.make_mesh()
    model, state, base_key, schedule = initial_state(config, data, mesh)
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(config.to_json(indent=2) + "\n")
    table = EpsilonTable(num_train)
    checkpoints = Checkpointer(workdir, config.checkpoints_to_keep)
    if checkpoints.latest_step() is not None:
        state, values, base_key, meta = checkpoints.restore(state, num_train)
        table = EpsilonTable(num_train, values)
        logging.info(
            "Resumed from %s at step %d (epoch %d).", workdir, int(state.step), meta["epoch"]
        )
    step = int(state.step)
    key = step_lib.replicate(base_key, mesh)
    eval_key = step_lib.replicate(jax.random.fold_in(base_key, 2**31 - 1), mesh)

    train_step = step_lib.make_train_step(model, config, mesh)
    log = reporting.MetricsLog(workdir, jax.process_index() == 0)
    log.drop_after(step)
    progress = reporting.Progress(step, total_steps)

    def on_log(step_done: int, metrics) -> None:
        if step_done % config.log_every_steps and step_done != total_steps:
            return
        rate = progress.interval(step_done)
        record = {k: float(v) for k, v in jax.device_get(metrics).items()}
        record.update(
            epoch=(step_done - 1) // steps_per_epoch,
            learning_rate=float(schedule(step_done - 1)),
            steps_per_second=rate,
            images_per_second=rate * config.batch_size,
        )
        log.write(step_done, record)
        progress.report(
            step_done,
            record["epoch"],
            config.num_epochs,
            rate,
            f"loss {record['train_loss']:.3f} | batch eps {record['batch_epsilon_mean']:.4f}",
        )

    logging.info(
        "Training %s on %s: %d examples, %d steps/epoch, %d steps, %d devices.",
        config.method,
        config.dataset,
        num_train,
        steps_per_epoch,
        total_steps,
        jax.device_count(),
    )
    while step < total_steps:
        epoch = step // steps_per_epoch
        epoch_end = min((epoch + 1) * steps_per_epoch, total_steps)
        state, step = _train_epoch(
            train_step, state, table, data, mesh, key, epoch, step, epoch_end, on_log
        )
        started = time.perf_counter()
        measured = evaluate.measure(
            state, model, mesh, data.eval_batches(), [per_epoch_attack(config)], eval_key
        )
        record = {
            "clean_accuracy": measured["clean_accuracy"],
            "robust_accuracy": measured["attacks"][0]["robust_accuracy"],
        }
        values = merged_table(table, num_train)
        record.update(EpsilonTable(num_train, values).summary(), epoch=epoch)
        record["eval_seconds"] = time.perf_counter() - started
        for example_id in config.tracked_ids:
            if example_id < num_train:
                record[f"epsilon_id_{example_id}"] = float(values[example_id])
        log.write(step, record)
        logging.info(
            "epoch %d: clean accuracy %.4f | robust accuracy %.4f (PGD-%d, eps %.4f) | "
            "mean eps %.4f",
            epoch + 1,
            record["clean_accuracy"],
            record["robust_accuracy"],
            config.eval_attack_steps,
            config.epsilon,
            record["epsilon_mean"],
        )
        if jax.process_index() == 0:
            EpsilonTable(num_train, values).save_npy(str(epath.Path(workdir) / "epsilon_table.npy"))
        checkpoints.save(
            step,
            state,
            values,
            base_key,
            {
                "epoch": epoch,
                "step": step,
                "num_train": num_train,
                "dataset": config.dataset,
                "method": config.method,
            },
        )
        progress.restart(step)
    checkpoints.wait()
    checkpoints.close()
    log.close()
    return state
