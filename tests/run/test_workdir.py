"""A workdir holds one run: resuming with a config that changes its meaning is refused, and
one process writes it at a time."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import load_config

from iaat_jax.errors import ConfigError
from iaat_jax.run import workdir


def test_a_resume_may_change_bookkeeping_but_not_the_run(tmp_path):
    config = load_config()
    assert not workdir.check_same_run(config, str(tmp_path))  # a fresh workdir
    workdir.save_config(config, str(tmp_path))
    config.update(data_dir="/elsewhere", log_every_steps=1, num_train_steps=5, sweep_restarts=3)
    assert workdir.check_same_run(config, str(tmp_path))
    config.update(batch_size=50, dataset="cifar10")
    with pytest.raises(ConfigError) as error:
        workdir.check_same_run(config, str(tmp_path))
    message = str(error.value)
    assert "batch_size=80 -> 50" in message and "dataset='mnist5k' -> 'cifar10'" in message
    assert "\n" not in message


def test_a_run_from_before_a_field_existed_resumes_at_its_default_only(tmp_path):
    config = load_config()
    workdir.save_config(config, str(tmp_path))
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["probe_steps"], saved["pgd_clean_check"]  # a run from before those fields ...
    saved.update(attack_batchnorm="batch", attack_batchnorm_updates=True)  # ... named so then
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config.update(attack_batchnorm="global", attack_batchnorm_updates=True)
    assert workdir.check_same_run(config, str(tmp_path))  # 'batch' is today's 'global'
    assert workdir.saved_config(str(tmp_path)).attack_batchnorm == "global"
    config.probe_steps = 2  # not what the run did
    with pytest.raises(ConfigError, match=r"probe_steps=None -> 2"):
        workdir.check_same_run(config, str(tmp_path))


def test_a_run_saved_with_iaats_older_field_names_resumes_and_evaluates(tmp_path):
    config = load_config()
    config.update(iaat_beta=0.2, iaat_gamma=0.05, iaat_warmup_epochs=1)
    workdir.save_config(config, str(tmp_path))
    saved = json.loads((tmp_path / "config.json").read_text())
    for old, new in (("beta", "iaat_beta"), ("gamma", "iaat_gamma")):
        saved[old] = saved.pop(new)  # as a run before the renaming wrote it
    saved["warmup_epochs"] = saved.pop("iaat_warmup_epochs")
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert workdir.check_same_run(config, str(tmp_path))
    reread = workdir.saved_config(str(tmp_path))
    assert (reread.iaat_beta, reread.iaat_gamma, reread.iaat_warmup_epochs) == (0.2, 0.05, 1)
    assert "beta" not in reread and "warmup_epochs" not in reread
    config.iaat_beta = 0.3  # not what the run did
    with pytest.raises(ConfigError, match=r"iaat_beta=0.2 -> 0.3"):
        workdir.check_same_run(config, str(tmp_path))


def test_older_command_line_names_are_given_their_current_names():
    argv = ["main", "--config.beta=0.1", "--config.gamma", "0.05", "--config.warmup_epochs=3"]
    argv += ["--config.trades_beta=6", "--config.lr_warmup_epochs=1", "--workdir=beta"]
    assert workdir.with_current_flag_names(argv) == [
        "main",
        "--config.iaat_beta=0.1",
        "--config.iaat_gamma",
        "0.05",
        "--config.iaat_warmup_epochs=3",
        "--config.trades_beta=6",
        "--config.lr_warmup_epochs=1",
        "--workdir=beta",
    ]


def test_a_damaged_config_json_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"dataset": ')
    with pytest.raises(ConfigError, match="config.json is damaged"):
        workdir.check_same_run(load_config(), str(tmp_path))


def test_a_second_writer_is_refused_while_the_first_lives(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = {"host": socket.gethostname(), "pid": sleeper.pid, "heartbeat": time.time()}
        (tmp_path / "LOCK").write_text(json.dumps(holder))
        with pytest.raises(ConfigError, match=f"in use by process {sleeper.pid}"):
            workdir.WorkdirLock(str(tmp_path)).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    # its process is gone: the lock is stale and taken over
    lock = workdir.WorkdirLock(str(tmp_path))
    lock.acquire()
    assert json.loads((tmp_path / "LOCK").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "LOCK").exists()


def test_a_lock_from_another_host_expires_with_its_heartbeat(tmp_path):
    fresh = {"host": "tpu-worker-7", "pid": 1, "heartbeat": time.time()}
    (tmp_path / "LOCK").write_text(json.dumps(fresh))
    with pytest.raises(ConfigError, match="on tpu-worker-7"):
        workdir.WorkdirLock(str(tmp_path)).acquire()
    stale = dict(fresh, heartbeat=time.time() - workdir.LOCK_STALE_SECONDS - 1)
    (tmp_path / "LOCK").write_text(json.dumps(stale))
    workdir.WorkdirLock(str(tmp_path)).acquire()  # a preempted host's lock: taken over


def test_the_heartbeat_is_refreshed_by_a_thread_until_release(tmp_path):
    lock = workdir.WorkdirLock(str(tmp_path))
    lock.acquire()
    first = json.loads((tmp_path / "LOCK").read_text())["heartbeat"]
    lock.keep_alive(every_seconds=0.05)
    deadline = time.time() + 10
    while json.loads((tmp_path / "LOCK").read_text())["heartbeat"] == first:
        assert time.time() < deadline, "the heartbeat thread never wrote"
        time.sleep(0.02)
    lock.release()
    assert not (tmp_path / "LOCK").exists()
    time.sleep(0.2)  # no beat after the release brings the lock back
    assert not (tmp_path / "LOCK").exists()
