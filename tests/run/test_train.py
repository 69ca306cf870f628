"""The training loop: artefacts, learning, automatic resume equal to an unbroken run."""

import json
import os
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
from conftest import REPO, cli_env, main_command

from iaat_jax import errors
from iaat_jax.data import fake_data
from iaat_jax.errors import ConfigError, NonFiniteError
from iaat_jax.evaluation import evaluate
from iaat_jax.run import checkpoint, train


def read_metrics(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_a_stopped_and_rerun_training_equals_an_unbroken_one(fast_config, tmp_path):
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    train.train_and_evaluate(fast_config, str(unbroken))

    fast_config.num_train_steps = 50  # one epoch of 4000 / 80: the run stops after epoch 1
    first_part = train.train_and_evaluate(fast_config, str(broken))
    assert int(first_part.step) == 50
    table_after_one_epoch = np.load(broken / "epsilon_table.npy")
    fast_config.num_train_steps = -1  # rerun the same command without the stop: it resumes
    train.train_and_evaluate(fast_config, str(broken))

    expected, resumed = (
        np.load(unbroken / "epsilon_table.npy"),
        np.load(broken / "epsilon_table.npy"),
    )
    assert expected.shape == (4000,) and expected.dtype == np.float32
    assert not np.array_equal(table_after_one_epoch, resumed)  # epoch 2 did run after resuming
    np.testing.assert_array_equal(resumed, expected)
    evals = [[r for r in read_metrics(d) if "robust_accuracy" in r] for d in (unbroken, broken)]
    assert [r["step"] for r in evals[1]] == [50, 100]  # no duplicate records after the resume
    assert evals[0][-1]["robust_accuracy"] == evals[1][-1]["robust_accuracy"]


def test_training_writes_metrics_and_table_and_learns(fast_config, tmp_path):
    fast_config.num_epochs, fast_config.iaat_warmup_epochs = 2, 1
    train.train_and_evaluate(fast_config, str(tmp_path))
    records = read_metrics(tmp_path)
    evals = [r for r in records if "robust_accuracy" in r]
    assert [r["epoch"] for r in evals] == [0, 1]
    for record in evals:
        assert 0.0 <= record["robust_accuracy"] <= record["clean_accuracy"] <= 1.0
        assert {"epsilon_mean", "epsilon_p10", "epsilon_p50", "epsilon_p90"} <= record.keys()
    assert evals[-1]["clean_accuracy"] > 0.5  # far above the 0.1 of chance after 2 epochs
    steps = [r for r in records if "train_loss" in r]
    assert steps and all(r["images_per_second"] > 0 for r in steps)
    table = np.load(tmp_path / "epsilon_table.npy")
    assert table.shape == (4000,) and np.all(table >= 0) and table.std() > 0
    assert evals[-1]["epsilon_mean"] == pytest.approx(float(table.mean()), rel=1e-5)


def fake_config(fast_config):
    """fast_config on fake data: seconds per run, no dataset needed."""
    fast_config.update(fake_data=True, num_train_steps=4, log_every_steps=1)
    return fast_config


def test_resuming_with_another_config_is_refused_before_anything_is_written(fast_config, tmp_path):
    config = fake_config(fast_config)
    train.train_and_evaluate(config, str(tmp_path))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    config.batch_size = 40
    with pytest.raises(ConfigError, match="batch_size=80 -> 40"):
        train.train_and_evaluate(config, str(tmp_path))
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    config.batch_size, config.model = 80, "wrn8_1_iaat"
    with pytest.raises(ConfigError, match="model='small_cnn' -> 'wrn8_1_iaat'"):
        evaluate.evaluate_run(config, str(tmp_path))
    config.model, config.method = "small_cnn", "pgd"  # an IAAT run is not evaluated as PGD-AT
    with pytest.raises(ConfigError, match="method='iaat' -> 'pgd'"):
        evaluate.evaluate_run(config, str(tmp_path))


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(
    fast_config, tmp_path, monkeypatch
):
    config = fake_config(fast_config)
    config.update(num_train_steps=10, checkpoint_every_steps=3)
    original = fake_data.FakeDataSource._batch
    calls = []

    def poisoned(self, rng, ids):  # the 6th training batch holds a NaN pixel
        batch = original(self, rng, ids)
        calls.append(len(ids))
        if len(calls) == 6:
            batch["image"] = batch["image"] / np.float32(255)  # float images pass as they are
            batch["image"][0, 0, 0, 0] = np.nan
        return batch

    monkeypatch.setattr(fake_data.FakeDataSource, "_batch", poisoned)
    with pytest.raises(NonFiniteError, match="the loss is nan at step 6; checkpoint 3 is intact"):
        train.train_and_evaluate(config, str(tmp_path))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["3"]
    assert max(r["step"] for r in read_metrics(tmp_path)) == 3  # nothing claims a later step
    monkeypatch.undo()
    state = train.train_and_evaluate(config, str(tmp_path))  # the rerun resumes from step 3
    assert int(state.step) == 10


def test_a_workdir_in_use_is_refused(fast_config, tmp_path):
    lock = {"host": socket.gethostname(), "pid": os.getppid(), "heartbeat": time.time()}
    (tmp_path / "LOCK").write_text(json.dumps(lock))
    with pytest.raises(ConfigError, match="in use by process"):
        train.train_and_evaluate(fake_config(fast_config), str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LOCK"]


KILL_RUN = (
    "--config.num_epochs=2",
    "--config.iaat_warmup_epochs=1",
    "--config.attack_steps=2",
    "--config.eval_attack_steps=2",
    "--config.batch_size=80",
    "--config.log_every_steps=1",
    "--config.checkpoint_every_steps=10",
)


def start_cli(workdir, data_dir):
    """The CLI on one CPU device, training KILL_RUN (2 epochs of 50 steps) in `workdir`."""
    command = main_command(workdir, data_dir, *KILL_RUN)
    return subprocess.Popen(command, cwd=REPO, env=cli_env(), stderr=subprocess.PIPE, text=True)


def run_until(process, text: str) -> str:
    """Read the process's log until a line contains `text`; return the log so far."""
    seen = []
    for line in process.stderr:
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"{text!r} never appeared:\n{''.join(seen[-30:])}")


@pytest.fixture(scope="module")
def unbroken_table(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("unbroken")
    process = start_cli(workdir, data_dir)
    _, log = process.communicate(timeout=600)
    assert process.returncode == 0, log[-3000:]
    return np.load(workdir / "epsilon_table.npy")


# The CLI with orbax's commit of checkpoint 20 held back forever: its files are being written
STALLED_SAVE = """
import runpy, sys, threading
from orbax.checkpoint._src.checkpointers import async_checkpointer
commit = async_checkpointer._on_commit_callback
def stalled(tmpdir, *args, **kwargs):
    if tmpdir.get().name.split(".")[0] == "20":
        threading.Event().wait()
    return commit(tmpdir, *args, **kwargs)
async_checkpointer._on_commit_callback = stalled
sys.argv = ["iaat_jax.main", *sys.argv[1:]]
runpy.run_module("iaat_jax.main", run_name="__main__")
"""


@pytest.mark.slow
def test_a_run_killed_before_its_save_committed_resumes_from_the_one_before(
    unbroken_table, data_dir, tmp_path
):
    command = main_command(tmp_path, data_dir, *KILL_RUN)
    command[1:3] = ["-c", STALLED_SAVE]  # python -c STALLED_SAVE --config=... instead of -m
    process = subprocess.Popen(command, cwd=REPO, env=cli_env(), stderr=subprocess.PIPE, text=True)
    log = run_until(process, "step 25/100")  # training went on while checkpoint 20 was written
    assert "checkpoint 20: the loop waited" in log
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names[0] == "10" and len(names) == 2 and names[1].startswith("20")  # being written
    assert max(r["step"] for r in read_metrics(tmp_path)) == 10  # nothing claims step 20
    process.kill()
    process.wait()
    resumed = start_cli(tmp_path, data_dir)
    _, log = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, log[-3000:]
    assert "at step 10 (epoch 0)" in log, log[:3000]
    np.testing.assert_array_equal(np.load(tmp_path / "epsilon_table.npy"), unbroken_table)
    steps = [r["step"] for r in read_metrics(tmp_path) if "train_loss" in r]
    assert steps == list(range(1, 101))


@pytest.mark.slow
def test_a_run_killed_in_its_epoch_end_resumes_to_the_unbroken_result(
    unbroken_table, data_dir, tmp_path
):
    process = start_cli(tmp_path, data_dir)
    run_until(process, "step 50/100")  # the last step of epoch 1: the kill lands in its
    # evaluation or save
    process.kill()  # SIGKILL: no handler runs
    process.wait()
    resumed = start_cli(tmp_path, data_dir)
    _, log = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, log[-3000:]
    assert "Resumed from" in log
    np.testing.assert_array_equal(np.load(tmp_path / "epsilon_table.npy"), unbroken_table)
    steps = [r["step"] for r in read_metrics(tmp_path) if "train_loss" in r]
    assert steps == list(range(1, 101))  # each step logged once, none lost or repeated


@pytest.mark.slow
def test_sigterm_saves_exits_0_and_resumes_exactly(unbroken_table, data_dir, tmp_path):
    process = start_cli(tmp_path, data_dir)
    run_until(process, "step 27/100")
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=300)
    assert process.returncode == 0, rest[-3000:]
    last = rest.strip().splitlines()[-1]
    assert last.startswith("stopped by SIGTERM at step ") and "rerun the same command" in last
    stopped_at = int(last.split("at step ")[1].split(":")[0])
    assert 27 <= stopped_at < 50 and (tmp_path / "checkpoints" / str(stopped_at)).is_dir()
    resumed = start_cli(tmp_path, data_dir)
    _, log = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, log[-3000:]
    assert f"at step {stopped_at}" in log
    np.testing.assert_array_equal(np.load(tmp_path / "epsilon_table.npy"), unbroken_table)


def test_a_lasting_read_error_stops_the_run_and_trains_nothing_from_step_0(
    fast_config, tmp_path, monkeypatch
):
    config = fake_config(fast_config)
    train.train_and_evaluate(config, str(tmp_path))
    (tmp_path / "LOCK").unlink(missing_ok=True)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def unreachable(self, *args, **kwargs):
        raise TimeoutError("gs://bucket/run: read timed out")

    monkeypatch.setattr(checkpoint, "RETRY_SECONDS", 0.0)
    monkeypatch.setattr(checkpoint.ocp.Checkpointer, "restore", unreachable)
    config.num_train_steps = 8
    with pytest.raises(errors.CheckpointError, match="reading checkpoint 4 .* timed out"):
        train.train_and_evaluate(config, str(tmp_path))
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # no checkpoint moved, no metrics of a new step 0, no new table


def test_records_of_a_checkpoint_whose_metrics_were_not_committed_come_back_on_resume(
    fast_config, tmp_path, monkeypatch
):
    config = fake_config(fast_config)  # 4 steps, each logged
    config.checkpoint_every_steps = 2
    # a kill after each checkpoint committed and before metrics.jsonl did
    monkeypatch.setattr(train.TrainingRun, "commit_saved", lambda self, wait: None)
    train.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "metrics.jsonl").exists()
    monkeypatch.undo()
    config.num_train_steps = 6
    train.train_and_evaluate(config, str(tmp_path))
    steps = [r["step"] for r in read_metrics(tmp_path) if "train_loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]  # 1-4 from the checkpoint of step 4, each once


@pytest.mark.parametrize("validation", [0, 1000])
def test_the_merged_table_takes_each_id_from_the_host_that_trains_it(validation):
    """Three hosts of fake mnist5k (4,000 ids; 1,000 held out or none): each host writes its
    number into the radii of the ids its batches hold; the merge must give every trained id its
    host's number and leave the held-out tail as it was."""
    from conftest import load_config

    config = load_config()
    config.batch_size, config.validation_examples = 60, validation
    tables = np.zeros((3, 4000), np.float32)
    owner = np.zeros(4000, np.float32)
    for host in range(3):
        source = fake_data.create_fake_source(config, process_index=host, process_count=3)
        ids = np.concatenate([b["id"] for b in source.train_epoch(0)])
        tables[host, ids] = owner[ids] = host + 1
    merged = train.merge_host_tables(tables, 4000 - validation)
    np.testing.assert_array_equal(merged, owner)
    assert {1, 2, 3} <= set(np.unique(merged[: 4000 - validation]))
    assert not np.any(merged[4000 - validation :])  # the held-out tail: never trained
