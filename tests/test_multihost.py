"""Two local processes with two CPU devices each: one training run over four devices."""

import json
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, cli_env, main_command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


RUN = (  # the run both tests train
    "--config.num_epochs=1",
    "--config.iaat_warmup_epochs=1",
    "--config.attack_steps=2",
    "--config.eval_attack_steps=2",
    "--config.batch_size=80",
    "--config.epsilon=0.1",
    "--config.epsilon_ramp_epochs=0",  # warm-up radii: epsilon or 0
)


def start_hosts(workdir, data_dir, *overrides):
    """Two processes with two CPU devices each, training one run of the default config."""
    address = f"localhost:{free_port()}"
    return [
        subprocess.Popen(
            main_command(
                workdir,
                data_dir,
                "--multihost",
                f"--coordinator_address={address}",
                "--num_processes=2",
                f"--process_id={index}",
                *RUN,
                *overrides,
            ),
            cwd=REPO,
            env=cli_env(devices=2),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for index in range(2)
    ]


def run_hosts(workdir, data_dir, *overrides) -> list[str]:
    """Both hosts to the end; their outputs. Fails naming the host that failed."""
    processes = start_hosts(workdir, data_dir, *overrides)
    try:
        outputs = [process.communicate(timeout=400)[0] for process in processes]
    finally:  # one host failing leaves the other waiting at a barrier: never leave it running
        for process in processes:
            process.kill()
    failed = [i for i, process in enumerate(processes) if process.returncode != 0]
    assert not failed, "\n".join(f"--- host {i}:\n{outputs[i][-2500:]}" for i in failed)
    return outputs


@pytest.mark.slow  # two processes compile and train, then evaluate twice, about 2 minutes
def test_two_hosts_train_together_and_merge_the_epsilon_table(data_dir, tmp_path):
    workdir = tmp_path / "run"
    outputs = run_hosts(workdir, data_dir)
    assert "train: 4 devices (cpu) on 2 hosts; this is host 1 with 2 of them" in outputs[1]

    # warm-up epoch: every visited id holds epsilon or 0; both hosts' halves reach the saved table
    table = np.load(workdir / "epsilon_table.npy")
    assert table.shape == (4000,)
    assert np.all(np.isclose(table, 0.0) | np.isclose(table, 0.1))
    for half in (table[:2000], table[2000:]):
        assert np.mean(half > 0) > 0.5
    evals = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if "robust_accuracy" in r]
    assert len(evals) == 1 and evals[0]["clean_accuracy"] > 0.5
    assert np.isclose(evals[0]["epsilon_mean"], table.mean())

    # the suite on two hosts, each gathering its own survivors, gives what one process gives
    evaluation = ("--mode=evaluate", "--config.eval_suite=smoke", "--config.sweep_epsilons=(0.0,)")
    run_hosts(workdir, data_dir, *evaluation)
    on_two_hosts = json.loads((workdir / "eval.json").read_text())
    one = subprocess.run(
        main_command(workdir, data_dir, *RUN, *evaluation),
        cwd=REPO,
        env=cli_env(devices=1),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert one.returncode == 0, one.stderr[-2500:]
    on_one = json.loads((workdir / "eval.json").read_text())
    assert on_two_hosts["autoattack"][0]["robust_accuracy"] < on_two_hosts["clean_accuracy"]
    for key in ("clean_accuracy", "robustbench"):
        assert on_two_hosts[key] == on_one[key]


@pytest.mark.slow  # two processes, about 40 s
def test_sigterm_on_both_hosts_stops_them_at_one_step_with_a_checkpoint(data_dir, tmp_path):
    workdir = tmp_path / "run"
    processes = start_hosts(workdir, data_dir, "--config.log_every_steps=1")
    try:
        logs = []
        for process in processes:
            seen = []
            for line in process.stdout:
                seen.append(line)
                if "step 12/50" in line:
                    break
            logs.append(seen)
        for process in processes:  # a preempted slice: every worker gets SIGTERM
            process.send_signal(signal.SIGTERM)
        outputs = [process.communicate(timeout=300)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    last_lines = [output.strip().splitlines()[-1] for output in outputs]
    assert last_lines[0] == last_lines[1] and last_lines[0].startswith("stopped by SIGTERM")
    step = int(last_lines[0].split("at step ")[1].split(":")[0])
    assert 12 <= step < 50 and (workdir / "checkpoints" / str(step)).is_dir()


def run_checkpoint_hosts(action, workdir, processes, devices, timeout=120):
    """tests/checkpoint_hosts.py ACTION on `processes` processes of `devices` CPU devices."""
    address = f"localhost:{free_port()}"
    started = [
        subprocess.Popen(
            [
                sys.executable,
                str(REPO / "tests" / "checkpoint_hosts.py"),
                action,
                str(workdir),
                address,
                str(processes),
                str(index),
            ],
            cwd=REPO,
            env=cli_env(devices=devices),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for index in range(processes)
    ]
    try:
        outputs = [process.communicate(timeout=timeout)[0] for process in started]
    finally:
        for process in started:
            process.kill()
    return [process.returncode for process in started], outputs


@pytest.mark.slow  # six short processes, about a minute
@pytest.mark.parametrize("saved_on, restored_on", [((2, 2), (1, 4)), ((1, 4), (2, 2))])
def test_a_checkpoint_moves_between_one_host_and_two_bit_exactly(tmp_path, saved_on, restored_on):
    codes, outputs = run_checkpoint_hosts("save", tmp_path, *saved_on)
    assert codes == [0] * saved_on[0], outputs
    codes, outputs = run_checkpoint_hosts("restore", tmp_path, *restored_on)
    assert codes == [0] * restored_on[0], "\n".join(o[-2000:] for o in outputs)
    assert all("restored step 11 on 4 devices" in output for output in outputs)


@pytest.mark.slow  # two short processes, about 30 s
def test_a_read_error_on_one_host_stops_both_with_nothing_moved(tmp_path):
    started = time.monotonic()
    codes, outputs = run_checkpoint_hosts("flaky", tmp_path, 2, 2, timeout=90)
    assert codes == [3, 3], "\n".join(o[-2000:] for o in outputs)
    assert time.monotonic() - started < 90
    assert "Input/output error" in outputs[1]  # the host that failed names its error
    assert "read error on host(s) [1]" in outputs[0]  # the other names the host
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["11"]
    assert not (tmp_path / "checkpoints_unreadable").exists()
