"""train_and_evaluate(config, workdir): the IAAT training loop, evaluation, logging, checkpoints.

Data flows one way: TFDS batch (image, label, id) -> gather eps by id from the host table ->
jitted data-parallel step -> new eps -> scatter by id. Importable from Colab and tests.
"""

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from iaat_jax.attacks import pgd
from iaat_jax.data.datasets import HostInput, host_range
from iaat_jax.errors import NonFiniteError, TrainingStopped
from iaat_jax.evaluation import evaluate
from iaat_jax.method import step as step_lib
from iaat_jax.method.epsilon import EpsilonTable
from iaat_jax.method.table_feed import TableFeed
from iaat_jax.run import config_checks, experiment, files, metrics_log, sharding
from iaat_jax.run import workdir as workdir_lib
from iaat_jax.run.checkpoint import Checkpointer
from iaat_jax.run.experiment import TrainState
from iaat_jax.run.stop import StopRequest
from iaat_jax.run.workdir import WorkdirLock


def merge_host_tables(tables: np.ndarray, num_trained: int) -> np.ndarray:
    """[hosts, N] -> [N]: each trained id from the host that trains it (its slice of the first
    num_trained ids); the held-out tail, which no host trains, from host 0."""
    merged = tables[0].copy()
    for host in range(len(tables)):
        start, end = host_range(num_trained, host, len(tables))
        merged[start:end] = tables[host, start:end]
    return merged


def merged_table(table: EpsilonTable, num_trained: int) -> np.ndarray:
    """The whole table on every host: each host owns (and updated) its own slice of ids."""
    if jax.process_count() == 1:
        return table.values
    return merge_host_tables(multihost_utils.process_allgather(table.values), num_trained)


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.array([jnp.isfinite(leaf).all() for leaf in jax.tree.leaves(tree)]))


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
    _unlogged: tuple | None = dataclasses.field(init=False, default=None)  # (step, metrics)
    _uncommitted: tuple | None = dataclasses.field(init=False, default=None)  # (step, table)

    def __post_init__(self):
        steps_per_epoch = self.data.steps_per_epoch
        epochs = range(self.first_step // steps_per_epoch, self.total_steps // steps_per_epoch + 1)
        train_step = step_lib.make_train_step(
            self.parts.model, self.config, self.mesh, epochs, steps_per_epoch
        )
        key = sharding.replicate(self.base_key, self.mesh)  # the step folds its number in
        self.feed = TableFeed(train_step, self.table, self.mesh, key)
        self.progress = metrics_log.Progress(self.first_step, self.total_steps)
        self.eval_key = sharding.replicate(
            jax.random.fold_in(self.base_key, pgd.Stream.EPOCH_EVAL_KEY), self.mesh
        )

    def train_epoch(
        self, state: TrainState, epoch: int, first_step: int, last_step: int, stop: StopRequest
    ) -> tuple[TrainState, int, bool]:
        """Steps [first_step, last_step) of `epoch`; a resume skips the batches before
        `first_step` without decoding them (the input's `skip`).

        The feed dispatches step t + 1 before it writes back the radii of step t (table_feed),
        and the metrics of a log step are read once the step after it is dispatched, so the
        host never drains that look-ahead to log. Saves every checkpoint_every_steps. Returns
        (state, next step, whether a stop was requested), with every radius so far in the table.
        """
        config, steps_per_epoch = self.config, self.data.steps_per_epoch
        step, skip = first_step, first_step - epoch * steps_per_epoch
        for batch in self.data.train_epoch(epoch, skip=skip):
            if step >= last_step:
                break
            state, metrics = self.feed.step(state, batch, epoch, step)
            self.log_pending()
            step += 1
            if step % config.log_every_steps == 0 or step == self.total_steps:
                self._unlogged = (step, metrics)
            self.commit_saved(wait=False)
            if stop.due(step, agree=step % config.log_every_steps == 0):
                self.flush()
                return state, step, True
            every = config.checkpoint_every_steps
            if every and step % every == 0 and step < last_step:
                self.flush()
                self.save(state, epoch, step)
        self.flush()
        return state, min(step, last_step), False

    def flush(self) -> None:
        """Every radius in the table and every log step logged (waits for the device)."""
        self.feed.flush()
        self.log_pending()

    def log_pending(self) -> None:
        """Log the last log step's metrics (metrics.jsonl, TensorBoard, console line with ETA)."""
        if self._unlogged is None:
            return
        (step_done, metrics), self._unlogged = self._unlogged, None
        config = self.config
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
        table = EpsilonTable(num_train, merged_table(self.table, self.data.num_trained))
        record = {
            "clean_accuracy": measured["clean_accuracy"],
            "robust_accuracy": measured["attacks"][0]["robust_accuracy"],
            **table.summary(num_ids=self.data.num_trained),  # the held-out tail never moves
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
        self.save(state, epoch, step, table)
        self.progress.restart(step)

    def save(self, state: TrainState, epoch: int, step: int, table=None) -> None:
        """Start checkpointing `step`; its table export and metrics follow once it commits."""
        num_train = self.data.num_train
        if not _all_finite(state.params):
            raise self.diverged(f"a parameter is not finite at step {step}")
        if table is None:
            table = EpsilonTable(num_train, merged_table(self.table, self.data.num_trained))
        meta = {
            "epoch": epoch,
            "step": step,
            "num_train": num_train,
            "dataset": self.config.dataset,
            "method": self.config.method,
        }
        self.commit_saved(wait=True)
        meta["metrics"] = self.log.uncommitted(up_to=step)  # restored if the file misses them
        started = time.perf_counter()
        self.checkpoints.save(step, state, table.values, self.base_key, meta)
        logging.info(
            "checkpoint %d: the loop waited %.2f s; its files are written in the background",
            step,
            time.perf_counter() - started,
        )
        self._uncommitted = (step, table)

    def commit_saved(self, wait: bool) -> None:
        """Once the save in progress has committed (`wait`: wait for it), export its table
        and commit the metrics up to its step: neither ever claims an incomplete checkpoint."""
        if self._uncommitted is None or (not wait and self.checkpoints.saving):
            return
        (step, table), self._uncommitted = self._uncommitted, None
        self.checkpoints.wait()
        if jax.process_index() == 0:
            table.save_npy(files.join(self.workdir, "epsilon_table.npy"))
        self.log.commit(up_to=step)

    def train(self, state: TrainState) -> TrainState:
        """Every remaining step, epoch by epoch; raises TrainingStopped after a requested stop."""
        steps_per_epoch, step = self.data.steps_per_epoch, self.first_step
        with StopRequest() as stop:
            while step < self.total_steps:
                epoch = step // steps_per_epoch
                epoch_end = min((epoch + 1) * steps_per_epoch, self.total_steps)
                try:
                    state, step, stopped = self.train_epoch(state, epoch, step, epoch_end, stop)
                except NonFiniteError as error:
                    raise self.diverged(str(error)) from None
                if stopped:
                    self.save(state, epoch, step)
                    self.commit_saved(wait=True)
                    raise TrainingStopped(step, stop.reason, str(self.workdir))
                self.end_epoch(state, epoch, step)
        self.commit_saved(wait=True)
        return state

    def diverged(self, what: str) -> NonFiniteError:
        self.commit_saved(wait=True)  # the save in progress holds finite numbers: keep it
        newest = self.checkpoints.latest_step()
        kept = "no checkpoint was written" if newest is None else f"checkpoint {newest} is intact"
        return NonFiniteError(
            f"training diverged: {what}; {kept}: lower the learning rate or fix the config, "
            "then rerun"
        )

    def close(self) -> None:
        """Wait for the save in progress; commit nothing more (an error may be on its way)."""
        try:
            self.checkpoints.close()
        finally:
            self.log.close()


def planned_steps(config: ml_collections.ConfigDict, data: HostInput) -> int:
    """The run's last step: its epochs, or config.num_train_steps where that is sooner."""
    total_steps = config.num_epochs * data.steps_per_epoch
    if config.num_train_steps > 0:
        total_steps = min(total_steps, config.num_train_steps)
    return total_steps


def finished_at(config: ml_collections.ConfigDict, workdir: str) -> int | None:
    """The newest checkpoint's step where it ends the run (nothing left to train), found
    before any data or model is built; None where there is something to train."""
    if not files.exists(files.join(workdir, "checkpoints")):
        return None
    config_checks.validate_config(config, jax.device_count())  # bad input first, as training
    workdir_lib.check_same_run(config, workdir)  # another config's run is an error, not done
    from iaat_jax.data import fake_data  # the dataset's sizes from its spec: no TensorFlow, no data

    sizes = fake_data.create_fake_source(config, jax.process_index(), jax.process_count())
    absolute = workdir if files.is_url(workdir) else os.path.abspath(workdir)  # as orbax needs
    latest = Checkpointer(absolute, None).latest_step()
    return latest if latest is not None and latest >= planned_steps(config, sizes) else None


def _start(
    config: ml_collections.ConfigDict, workdir: epath.Path
) -> tuple[TrainingRun, TrainState]:
    """Build the run and its state, restored from the workdir's newest readable checkpoint."""
    data = experiment.data_source(config)
    config_checks.check_batch_fits(config, data.num_trained, data.steps_per_epoch)
    total_steps = planned_steps(config, data)
    mesh = sharding.make_mesh()
    parts = experiment.create_experiment(config, data, mesh)
    state, table, base_key = parts.state, EpsilonTable(data.num_train), parts.base_key
    checkpoints = Checkpointer(workdir, config.checkpoints_to_keep)
    restored = checkpoints.restore_newest(state, data.num_train)
    if restored is not None:
        state, values, base_key, meta = restored
        table = EpsilonTable(data.num_train, values)
        logging.info("Resumed from %s at step %d (epoch %d).", workdir, meta["step"], meta["epoch"])
    if jax.process_index() == 0:
        workdir_lib.save_config(config, workdir)
        if restored is not None:  # the export may be missing or damaged: rewrite it from there
            table.save_npy(files.join(workdir, "epsilon_table.npy"))
    step = int(state.step)
    log = metrics_log.MetricsLog(workdir, jax.process_index() == 0)
    log.drop_after(step, carried=restored[3].get("metrics", []) if restored else [])
    run = TrainingRun(
        config,
        workdir,
        data,
        mesh,
        parts,
        table,
        base_key,
        checkpoints,
        log,
        step,
        total_steps,
    )
    return run, state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Train `config` in `workdir`, resuming from its newest checkpoint; return the final state.

    Raises ConfigError for bad input (before anything is written), TrainingStopped after a
    SIGTERM/SIGINT checkpoint, NonFiniteError on divergence, CheckpointError on a failed save
    or a lasting read error.
    """
    config_checks.validate_config(config, jax.device_count())
    path = config_checks.check_workdir(workdir)
    workdir_lib.check_same_run(config, path)
    lock = WorkdirLock(path)
    if jax.process_index() == 0:
        lock.acquire()
        lock.keep_alive()  # the heartbeat is a thread: the loop never waits for its write
    try:
        run, state = _start(config, path)
        logging.info(
            "Training %s on %s (%d examples) in %s: steps %d to %d (%d per epoch, %d epochs), "
            "global batch %d on %d devices of %d hosts.",
            config.method,
            config.dataset,
            run.data.num_train,
            workdir,
            run.first_step,
            run.total_steps,
            run.data.steps_per_epoch,
            config.num_epochs,
            config.batch_size,
            jax.device_count(),
            jax.process_count(),
        )
        try:
            return run.train(state)
        finally:
            run.close()
    finally:
        if jax.process_index() == 0:
            lock.release()
