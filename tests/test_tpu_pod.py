"""launch/tpu_pod.py: the dry run, the launcher's decisions against a scripted gcloud, its
one-line refusals, the shipped tree, the worker's job script run here, and the end-to-end
rehearsal against a stand-in slice (slow)."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO, cli_env


def load_launcher():
    spec = importlib.util.spec_from_file_location("tpu_pod", REPO / "launch" / "tpu_pod.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tpu_pod = load_launcher()
import tpu_inputs  # noqa: E402  (importable once tpu_pod put launch/ on sys.path)
import tpu_launcher  # noqa: E402
import tpu_worker  # noqa: E402

POD_ARGS = [
    "--name=iaat",
    "--zone=us-central2-b",
    "--accelerator_type=v4-32",
    "--spot",
    "--config=configs/imagenet.py",
    "--workdir=gs://bucket/runs/imagenet",
]
DATA = "--config.data_dir=gs://bucket/tfds"  # imagenet2012 is read from a prepared data_dir


def test_dry_run_prints_every_command_the_uv_install_and_the_detached_start(capsys):
    assert tpu_pod.main([*POD_ARGS, "--delete", "--dry_run", "--", DATA, "--config.seed=3"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("dry run: nothing is created") and lines[-1].startswith("dry run:")
    assert "training finished" not in out
    commands = [line[2:] for line in lines if line.startswith("$ ")]
    zone = "--zone=us-central2-b"
    assert commands[0].startswith("gcloud compute tpus tpu-vm describe iaat")
    assert commands[1] == (
        "gcloud compute tpus tpu-vm create iaat --accelerator-type=v4-32 "
        f"--version=tpu-ubuntu2204-base --spot {zone}"
    )
    assert commands[2].startswith("git -C ") and " archive " in commands[2]
    assert commands[3].endswith(f"iaat:iaat_jax.tgz --worker=all {zone}")
    assert (
        commands[4]
        == f'gcloud compute tpus tpu-vm ssh iaat --worker=all --command="$REMOTE" {zone}'
    )
    remote = [line[4:] for line in lines if line.startswith("  | ")]
    install = remote[0]  # the image's python3 only installs uv; uv makes a 3.11 venv
    assert "python3 -m pip install --user --quiet --disable-pip-version-check uv==" in install
    assert "~/.local/bin/uv venv --quiet --allow-existing --python 3.11 ~/iaat_jax_venv" in install
    assert "-r ~/iaat_jax/requirements.txt 'jax[tpu]==0.10.2'" in install
    assert "sys.version_info >= (3, 11)" in install
    starts = [i for i, c in enumerate(commands) if "ssh iaat --worker=" in c][1:5]
    assert [commands[i].split()[6] for i in starts] == [f"--worker={w}" for w in range(4)]
    train = [line for line in remote if "-m iaat_jax.main" in line]
    assert len(train) == 4 and train[0].startswith(
        "../iaat_jax_venv/bin/python -m iaat_jax.main --multihost --require_platform=tpu "
        f"--config=configs/imagenet.py --workdir=gs://bucket/runs/imagenet {DATA} --config.seed=3"
    )
    assert remote.count("setsid nohup bash run.sh > /dev/null 2>&1 < /dev/null &") == 4
    assert any("gs://bucket/runs/imagenet/launch_logs/" in line for line in remote)
    fetches = [c for c in commands if c.startswith("gcloud compute tpus tpu-vm scp iaat:")]
    for worker, fetch in enumerate(fetches):
        assert f"launch_logs/iaat/worker-{worker}.log --worker={worker} {zone}" in fetch
    assert commands[-1] == f"gcloud compute tpus tpu-vm delete iaat --quiet {zone}"


class ScriptedCloud:
    """A runner for the launcher's logic: `describe` answers from a list of slice states (the
    last one repeats), each poll of the workers from a list of per-worker states ('running',
    'exit:0', 'stopped', 'lost', ...; the last repeats); it records every command."""

    def __init__(self, states, polls, workdir="gs://bucket/runs/imagenet"):
        self.states, self.polls, self.workdir, self.commands = (
            list(states),
            list(polls),
            workdir,
            [],
        )
        self.asked, self.lock = set(), threading.Lock()

    def __call__(self, argv, capture):
        with self.lock:  # the launcher asks the workers in parallel
            self.commands.append(argv)
            if "describe" in argv:
                state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
                return (1, "ERROR: NOT_FOUND") if state == "NOT_FOUND" else (0, state + "\n")
            if f"--command={tpu_worker.STATUS_COMMAND}" in argv:
                worker = int(next(a for a in argv if a.startswith("--worker="))[9:])
                if worker in self.asked:  # a new poll
                    self.asked.clear()
                    if len(self.polls) > 1:
                        self.polls.pop(0)
                self.asked.add(worker)
                return 0, f"{self.polls[0][worker]}\t{self.workdir}\tstep\n"
            return 0, ""

    def verbs(self):
        """create / delete / install / start / stop, in order (describe, polls, scp left out)."""
        names = []
        for argv in self.commands:
            command = next((a for a in argv if a.startswith("--command=")), "")
            if "create" in argv or "delete" in argv:
                names.append("create" if "create" in argv else "delete")
            elif "tar -xzf" in command:
                names.append("install")
            elif "setsid nohup" in command:
                names.append("start")
            elif command == f"--command={tpu_worker.STOP_COMMAND}":
                names.append("stop")
        return names


RUNNING, DONE = ["running"] * 4, ["exit:0"] * 4


def launch(cloud, *extra):
    args = tpu_pod.parse_args([*POD_ARGS, "--log_dir=/tmp/iaat_launch_test", *extra, "--", DATA])
    return tpu_launcher.Launcher(args, cloud, sleep=lambda _: None).run()


def test_a_preempted_slice_is_recreated_and_the_same_job_started_again():
    # a new slice; the job runs, the slice is preempted; recreate, reinstall, start, finish
    cloud = ScriptedCloud(
        ["NOT_FOUND", "READY", "PREEMPTED", "PREEMPTED", "READY"], [RUNNING, DONE]
    )
    assert launch(cloud) == 0
    starts = ["start"] * 4
    assert cloud.verbs() == ["create", "install", *starts, "delete", "create", "install", *starts]
    scripts = [a for argv in cloud.commands for a in argv if "setsid nohup" in a]
    first, second = scripts[0], scripts[4]  # worker 0, before and after: the same command
    assert first.split("launch_logs/")[0] == second.split("launch_logs/")[0]
    assert first.split("-worker-0.log")[1] == second.split("-worker-0.log")[1]


def test_a_second_launcher_attaches_to_the_running_job_and_never_starts_it_twice():
    cloud = ScriptedCloud(["READY"], [RUNNING, RUNNING, DONE])
    assert launch(cloud) == 0
    assert cloud.verbs() == []  # no install, no start: it only polls
    other = ScriptedCloud(["READY"], [RUNNING], workdir="gs://bucket/runs/another")
    assert launch(other) == 2 and other.verbs() == []


def test_a_failing_worker_stops_the_job_and_restarts_are_bounded(capsys):
    failing = ScriptedCloud(
        ["READY"],
        [
            ["none"] * 4,
            ["running", "exit:1", "running", "running"],
            ["exit:0", "exit:1", "stopped", "running"],
            ["exit:0", "exit:1", "stopped", "stopped"],
        ],
    )
    assert launch(failing) == 1
    assert failing.verbs() == ["install", *["start"] * 4, *["stop"] * 4]
    assert "error: worker 1's training failed (exit 1): step" in capsys.readouterr().err
    always_preempted = ScriptedCloud(
        ["NOT_FOUND"] + ["READY", "PREEMPTED", "PREEMPTED"] * 9, [RUNNING]
    )
    assert launch(always_preempted, "--max_retries=2") == 1
    assert always_preempted.verbs().count("create") == 3  # the first and 2 recreations


def test_a_job_stopped_by_a_signal_on_a_healthy_slice_is_started_again():
    # a maintenance event's SIGTERM: every worker saved a checkpoint and exited 'stopped'
    cloud = ScriptedCloud(["READY"], [["none"] * 4, ["stopped"] * 4, DONE])
    assert launch(cloud) == 0
    assert cloud.verbs() == ["install", *["start"] * 8]  # no second install


@pytest.mark.parametrize(
    "kind, hosts, image",
    [
        ("v2-8", 1, "tpu-ubuntu2204-base"),
        ("v3-32", 4, "tpu-ubuntu2204-base"),
        ("v4-32", 4, "tpu-ubuntu2204-base"),
        ("v5p-128", 16, "v2-alpha-tpuv5"),
        ("v5litepod-16", 4, "v2-alpha-tpuv5-lite"),
        ("v6e-8", 1, "v2-alpha-tpuv6e"),
    ],
)
def test_worker_count_and_runtime_image_of_each_slice(kind, hosts, image):
    assert tpu_inputs.workers_of(kind) == hosts
    args = tpu_pod.parse_args(
        [*POD_ARGS[:2], f"--accelerator_type={kind}", *POD_ARGS[3:], "--", DATA]
    )
    assert args.runtime_version == image


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--workdir=/local/dir"], "--workdir=/local/dir is not a gs:// path"),
        (["--config=configs/cifar10.py"], "the dataset cifar10 is not embedded: prepare it once"),
        (
            ["--config=configs/cifar10.py", "--", "--config.data_dir=/data"],
            "--config.data_dir=/data is not a gs:// path",
        ),
        (
            ["--config=/etc/hostname"],
            "--config=/etc/hostname is not a config file of this checkout",
        ),
        (["--accelerator_type=v9-8"], "unknown --accelerator_type=v9-8"),
    ],
)
def test_bad_launcher_input_is_one_line_and_exit_2_before_any_command(arguments, message):
    result = subprocess.run(
        [sys.executable, "launch/tpu_pod.py", *POD_ARGS, "--dry_run", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and message in result.stderr.splitlines()[-1], result.stderr
    assert "$ " not in result.stdout


def test_a_prepared_dataset_on_gcs_passes_and_help_is_complete():
    ok = [*POD_ARGS[:4], "--config=configs/cifar10.py", POD_ARGS[5], "--dry_run"]
    ok += ["--", "--config.data_dir=gs://bucket/tfds"]
    assert tpu_pod.parse_args(ok).overrides == ["--config.data_dir=gs://bucket/tfds"]
    result = subprocess.run(
        [sys.executable, "launch/tpu_pod.py", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0
    assert tpu_pod.__doc__.strip().splitlines()[-1] in result.stdout  # the whole docstring
    for flag in ("--status", "--logs", "--stop", "--dry_run", "--runtime_version", "--rehearsal"):
        assert flag in result.stdout


def test_the_shipped_tree_is_the_working_tree_untracked_files_included(tmp_path):
    git = ["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("ignored.txt\n")
    (tmp_path / "config.py").write_text("committed\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    (tmp_path / "config.py").write_text("edited\n")
    (tmp_path / "new.py").write_text("untracked\n")
    (tmp_path / "ignored.txt").write_text("secret\n")
    tree = tpu_inputs.working_tree(tmp_path)
    listed = subprocess.run([*git, "ls-tree", "--name-only", tree], capture_output=True, text=True)
    assert listed.stdout.split() == [".gitignore", "config.py", "new.py"]
    shipped = subprocess.run([*git, "show", f"{tree}:config.py"], capture_output=True, text=True)
    assert shipped.stdout == "edited\n"
    status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True)
    assert status.stdout.split() == ["M", "config.py", "??", "new.py"]  # the index is untouched


def run_job(tmp_path, train_command, signal_job=False):
    """The launcher's start command for one worker, run here (HOME=tmp_path), with a stand-in
    gcloud that copies the log; `signal_job` sends SIGTERM to the whole job once it runs (as a
    VM shutdown does). Returns the status command's reading once the job is done."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "gcloud").write_text(
        '#!/usr/bin/env bash\nmkdir -p "$(dirname "$5")"; cp "$4" "$5"\n'
    )
    (bin_dir / "gcloud").chmod(0o755)
    env = {**os.environ, "HOME": str(tmp_path), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    (tmp_path / "iaat_jax").mkdir(exist_ok=True)
    remote_log = str(tmp_path / "bucket" / "launch_logs" / "worker-0.log")
    script = tpu_worker.job_script(["bash", "-c", train_command], remote_log, 1)
    start = tpu_worker.start_command(0, "gs://bucket/run", script)
    started = subprocess.run(["bash", "-c", start], env=env, capture_output=True, text=True)
    assert "started (pid" in started.stdout
    again = subprocess.run(["bash", "-c", start], env=env, capture_output=True, text=True)
    job = tmp_path / "iaat_jax_job"
    if signal_job:
        for _ in range(100):
            if (job / "train.log").exists() and "training" in (job / "train.log").read_text():
                break
            time.sleep(0.05)
        os.killpg(int((job / "pid").read_text()), signal.SIGTERM)
    for _ in range(200):
        status = subprocess.run(
            ["bash", "-c", tpu_worker.STATUS_COMMAND], env=env, capture_output=True, text=True
        )
        found = tpu_worker.WorkerStatus.parse(status.stdout)
        if found.state != "running":
            return found, again.stdout, tmp_path / "bucket" / "launch_logs" / "worker-0.log"
        time.sleep(0.1)
    raise AssertionError("the job did not end")


def test_the_detached_job_records_its_exit_status_and_copies_its_log(tmp_path):
    found, again, copied = run_job(tmp_path / "a", "sleep 1; echo epoch 1; exit 3")
    assert "already runs a job" in again  # started once, not twice
    assert (found.state, found.exit_status, found.workdir) == ("exited", 3, "gs://bucket/run")
    assert found.last_line == "epoch 1" and copied.read_text() == "epoch 1\n"
    stopped, _, _ = run_job(tmp_path / "b", "echo 'stopped by SIGTERM at step 3: ...'; echo x")
    assert stopped.state == "stopped"  # a checkpoint saved on a signal: to be resumed


@pytest.mark.parametrize("handles_it", [True, False])
def test_a_sigterm_to_the_whole_job_reaches_training_and_is_resumable(tmp_path, handles_it):
    """A VM shutdown signals every process of the job: run.sh passes SIGTERM on and waits, so
    training saves its checkpoint (or dies of the signal) and the outcome is 'stopped'."""
    trainer = "echo training; sleep 30 & wait"
    if handles_it:
        trainer = "trap 'echo \"stopped by SIGTERM at step 3: saved\"; exit 0' TERM; " + trainer
    found, _, copied = run_job(tmp_path, trainer, signal_job=True)
    assert found.state == "stopped", found
    if handles_it:
        assert "stopped by SIGTERM" in copied.read_text()  # the final log copy was made


@pytest.mark.slow  # about 9 minutes on 2 cores: three short 2-process runs and three installs
def test_the_pod_launch_rehearsal_passes_every_check():
    """launch/rehearse_pod.sh: the launcher, unchanged, against a stand-in slice of 2 workers
    whose python3 is 3.10; preempted and resumed, killed and re-attached, both ending exactly
    where an unbroken run does (launch/rehearsal/rehearse.py lists every check)."""
    result = subprocess.run(
        ["bash", "launch/rehearse_pod.sh", "2"],
        cwd=REPO,
        env={**cli_env(), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["python"].startswith("3.11.")  # the workers' python3 is 3.10
    assert {k: v for k, v in summary.items() if k not in ("python", "seconds")} == {
        "rehearsal": "ok",
        "workers": 2,
        "preempted_and_resumed": True,
        "launcher_killed_and_reattached": True,
        "matches_unbroken_run": True,
    }
