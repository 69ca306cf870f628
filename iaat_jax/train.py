"""train_and_evaluate(config, workdir): the IAAT training loop, evaluation, logging, checkpoints.

Data flows one way: TFDS batch (image, label, id) -> gather eps by id from the host table ->
jitted data-parallel step -> new eps -> scatter by id. Importable from Colab and tests.
"""

import dataclasses
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from iaat_jax import config_checks, evaluate, experiment, metrics_log, sharding
from iaat_jax import step as step_lib
from iaat_jax.checkpoint import Checkpointer
from iaat_jax.datasets import HostInput, host_range
from iaat_jax.epsilon import EpsilonTable
from iaat_jax.experiment import TrainState
from iaat_jax.table_feed import TableFeed


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


@dataclasses.dataclass
class TrainingRun:
    """Everything the loop carries besides the train state: input, table, step, log, saves."""

    config: ml_collections.ConfigDict
    workdir: epath.Path
    data: HostInput
    mesh: Mesh
    parts: experiment.Experiment
    table: EpsilonTable
    base_key: jax.Array
    checkpoints: Checkpointer
    log: metrics_log.MetricsLog
    first_step: int
    total_steps: int
    feed: TableFeed = dataclasses.field(init=False)
    eval_key: jax.Array = dataclasses.field(init=False)
    progress: metrics_log.Progress = dataclasses.field(init=False)

    def __post_init__(self):
        steps_per_epoch = self.data.steps_per_epoch
        epochs = range(self.first_step // steps_per_epoch, self.total_steps // steps_per_epoch + 1)
        train_step = step_lib.make_train_step(self.parts.model, self.config, self.mesh, epochs)
        key = sharding.replicate(self.base_key, self.mesh)  # the step folds its number in
        self.feed = TableFeed(train_step, self.table, self.mesh, key)
        self.progress = metrics_log.Progress(self.first_step, self.total_steps)
        self.eval_key = sharding.replicate(jax.random.fold_in(self.base_key, 2**31 - 1), self.mesh)

    def train_epoch(self, state: TrainState, epoch: int, first_step: int, last_step: int):
        """Steps [first_step, last_step) of `epoch`, replaying the epoch's order to `first_step`.

        The feed dispatches step t + 1 before it writes back the radii of step t (table_feed).
        Returns (state, next step), with every radius of the epoch in the table.
        """
        steps_per_epoch = self.data.steps_per_epoch
        step = first_step
        for index, batch in enumerate(self.data.train_epoch(epoch)):
            step = epoch * steps_per_epoch + index
            if step < first_step:
                continue
            if step >= last_step:
                break
            state, metrics = self.feed.step(state, batch, epoch)
            self.log_train_step(step + 1, metrics)
        self.feed.flush()
        return state, min(step + 1, last_step)

    def log_train_step(self, step_done: int, metrics: dict) -> None:
        """Every log_every_steps (and at the last step): metrics.jsonl, TensorBoard, console."""
        config = self.config
        if step_done % config.log_every_steps and step_done != self.total_steps:
            return
        rate = self.progress.interval(step_done)
        record = {k: float(v) for k, v in jax.device_get(metrics).items()}
        record.update(
            epoch=(step_done - 1) // self.data.steps_per_epoch,
            learning_rate=float(self.parts.schedule(step_done - 1)),
            steps_per_second=rate,
            images_per_second=rate * config.batch_size,
        )
        self.log.write(step_done, record)
        self.progress.report(
            step_done,
            record["epoch"],
            config.num_epochs,
            rate,
            f"loss {record['train_loss']:.3f} | batch eps {record['batch_epsilon_mean']:.4f}",
        )

    def end_epoch(self, state: TrainState, epoch: int, step: int) -> None:
        """Evaluate, log the radii, export the table and save a checkpoint at `step`."""
        config, num_train = self.config, self.data.num_train
        started = time.perf_counter()
        measured = evaluate.measure(
            state,
            self.parts.model,
            self.mesh,
            self.data.eval_batches(),
            [evaluate.per_epoch_attack(config)],
            self.eval_key,
            unroll=experiment.unroll_attacks(config),
        )
        table = EpsilonTable(num_train, merged_table(self.table, num_train))
        record = {
            "clean_accuracy": measured["clean_accuracy"],
            "robust_accuracy": measured["attacks"][0]["robust_accuracy"],
            **table.summary(),
            "epoch": epoch,
            "eval_seconds": time.perf_counter() - started,
        }
        for example_id in config.tracked_ids:
            if example_id < num_train:
                record[f"epsilon_id_{example_id}"] = float(table.values[example_id])
        self.log.write(step, record)
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
            table.save_npy(str(self.workdir / "epsilon_table.npy"))
        meta = {
            "epoch": epoch,
            "step": step,
            "num_train": num_train,
            "dataset": config.dataset,
            "method": config.method,
        }
        self.checkpoints.save(step, state, table.values, self.base_key, meta)
        self.progress.restart(step)


def _start(
    config: ml_collections.ConfigDict, workdir: epath.Path
) -> tuple[TrainingRun, TrainState]:
    """Build the run and its state, restored from the workdir's newest checkpoint if any."""
    data = experiment.data_source(config)
    config_checks.check_batch_fits(config, data.num_train, data.steps_per_epoch)
    total_steps = config.num_epochs * data.steps_per_epoch
    if config.num_train_steps > 0:
        total_steps = min(total_steps, config.num_train_steps)
    mesh = sharding.make_mesh()
    parts = experiment.create_experiment(config, data, mesh)
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(config.to_json(indent=2) + "\n")
    state, table, base_key = parts.state, EpsilonTable(data.num_train), parts.base_key
    checkpoints = Checkpointer(workdir, config.checkpoints_to_keep)
    if checkpoints.latest_step() is not None:
        state, values, base_key, meta = checkpoints.restore(state, data.num_train)
        table = EpsilonTable(data.num_train, values)
        logging.info("Resumed from %s at step %d (epoch %d).", workdir, meta["step"], meta["epoch"])
    step = int(state.step)
    log = metrics_log.MetricsLog(workdir, jax.process_index() == 0)
    log.drop_after(step)
    run = TrainingRun(
        config, workdir, data, mesh, parts, table, base_key, checkpoints, log, step, total_steps
    )
    return run, state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Train `config` in `workdir`, resuming from its latest checkpoint; return the final state."""
    config_checks.validate_config(config, jax.device_count())
    run, state = _start(config, config_checks.check_workdir(workdir))
    steps_per_epoch, step = run.data.steps_per_epoch, int(state.step)
    logging.info(
        "Training %s on %s: %d examples, %d steps/epoch, %d steps, %d devices.",
        config.method,
        config.dataset,
        run.data.num_train,
        steps_per_epoch,
        run.total_steps,
        jax.device_count(),
    )
    while step < run.total_steps:
        epoch = step // steps_per_epoch
        epoch_end = min((epoch + 1) * steps_per_epoch, run.total_steps)
        state, step = run.train_epoch(state, epoch, step, epoch_end)
        run.end_epoch(state, epoch, step)
    run.checkpoints.wait()
    run.checkpoints.close()
    run.log.close()
    return state
