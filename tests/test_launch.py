"""launch/: the TPU pod launcher (dry run and preemption handling), the frontier script's
arguments, the probe study's runs and the Colab notebook, run headless."""

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

METHODS = ("clean", "pgd", "iaat")


def load_launcher():
    spec = importlib.util.spec_from_file_location("tpu_pod", REPO / "launch" / "tpu_pod.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tpu_pod = load_launcher()
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
            if f"--command={tpu_pod.STATUS_COMMAND}" in argv:
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
            elif command == f"--command={tpu_pod.STOP_COMMAND}":
                names.append("stop")
        return names


RUNNING, DONE = ["running"] * 4, ["exit:0"] * 4


def launch(cloud, *extra):
    args = tpu_pod.parse_args([*POD_ARGS, "--log_dir=/tmp/iaat_launch_test", *extra, "--", DATA])
    return tpu_pod.Launcher(args, cloud, sleep=lambda _: None).run()


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
    assert tpu_pod.workers_of(kind) == hosts
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


def test_the_shipped_tree_is_the_working_tree_untracked_files_included(tmp_path, monkeypatch):
    git = ["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("ignored.txt\n")
    (tmp_path / "config.py").write_text("committed\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    (tmp_path / "config.py").write_text("edited\n")
    (tmp_path / "new.py").write_text("untracked\n")
    (tmp_path / "ignored.txt").write_text("secret\n")
    monkeypatch.setattr(tpu_pod, "REPO", tmp_path)
    tree = tpu_pod.working_tree()
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
    script = tpu_pod.job_script(["bash", "-c", train_command], remote_log, 1)
    start = tpu_pod.start_command(0, "gs://bucket/run", script)
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
            ["bash", "-c", tpu_pod.STATUS_COMMAND], env=env, capture_output=True, text=True
        )
        found = tpu_pod.WorkerStatus.parse(status.stdout)
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


def recording_python(tmp_path):
    """A stand-in for Python that appends its arguments to calls.txt, makes each --workdir and
    writes eval.json where it evaluates: the launch scripts' loop without any training."""
    calls = tmp_path / "calls.txt"
    stand_in = tmp_path / "python"
    stand_in.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {calls}\n'
        'for a in "$@"; do case $a in --workdir=*) mkdir -p "${a#--workdir=}";; esac; done\n'
        'case "$*" in *--mode=evaluate*) for a in "$@"; do case $a in --workdir=*) '
        'echo {} > "${a#--workdir=}/eval.json";; esac; done;; esac\n'
    )
    stand_in.chmod(0o755)
    return stand_in, calls


def run_name(line: str) -> str:
    return line.split("--workdir=")[1].split()[0].rsplit("/", 1)[1]


def test_the_probe_study_trains_every_setting_per_seed_and_skips_finished_evaluations(tmp_path):
    """launch/probe_options_mnist5k.sh through launch/_train_and_evaluate.sh."""
    stand_in, calls = recording_python(tmp_path)
    (tmp_path / "out" / "iaat_probe2_seed1").mkdir(parents=True)
    (tmp_path / "out" / "iaat_probe2_seed1" / "eval.json").write_text("{}")
    result = subprocess.run(
        ["bash", "launch/probe_options_mnist5k.sh", str(tmp_path / "out"), "0 1", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": str(stand_in)},
    )
    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines()
    trained = [line for line in lines if "iaat_jax.main --config" in line]
    evaluated = [line for line in lines if "--mode=evaluate" in line]
    runs = ["iaat_full_seed0", "iaat_probe2_seed0", "iaat_full_seed1", "iaat_probe2_seed1"]
    assert [run_name(line) for line in trained] == runs
    seeds = [line.split("--config.seed=")[1].split()[0] for line in trained]
    assert seeds == [name[-1] for name in runs]
    assert ["--config.probe_steps=2" in line for line in trained] == [False, True, False, True]
    assert len(evaluated) == 3 and not any("iaat_probe2_seed1 " in line for line in evaluated)
    assert all("--config.eval_suite=apgd" in line for line in evaluated)
    report = lines[-1]
    assert report.startswith("-m iaat_jax.report") and report.count("/out/iaat_") == 4


def test_the_frontier_trains_clean_pgd_at_each_radius_trades_and_iaat_for_the_budget(tmp_path):
    stand_in, calls = recording_python(tmp_path)
    result = subprocess.run(
        ["bash", "launch/frontier_mnist5k.sh", str(tmp_path / "out"), "4", "0.3 0.45", "15"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": str(stand_in), "IAAT_ARGS": "--config.gamma=0.05"},
    )
    assert result.returncode == 0, result.stderr
    trained = [line for line in calls.read_text().splitlines() if "main --config" in line]
    names = ["clean", "pgd_eps0.3", "pgd_eps0.45", "trades_eps0.3", "iaat_eps0.3"]
    assert [run_name(line) for line in trained] == [f"{n}_ep15_seed4" for n in names]
    methods = [line.split("--config.method=")[1].split()[0] for line in trained]
    assert methods == ["clean", "pgd", "pgd", "trades", "iaat"]
    assert all("--config.num_epochs=15" in line and "--config.seed=4" in line for line in trained)
    assert "--config.epsilon=0.45" in trained[2] and "--config.gamma=0.05" in trained[4]
    assert not any("gamma" in line for line in trained[:4])
    result = subprocess.run(
        ["bash", "launch/frontier_mnist5k.sh", str(tmp_path / "iaat"), "4", "", "7"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": str(stand_in), "CLEAN": "0", "TRADES_RADII": ""},
    )
    assert result.returncode == 0, result.stderr
    trained = [
        line
        for line in calls.read_text().splitlines()
        if "iaat/" in line and "main --config" in line
    ]
    assert [run_name(line) for line in trained] == ["iaat_eps0.3_seed4"]


def test_the_search_holds_out_training_digits_in_every_run_and_grids_radius_by_gamma(tmp_path):
    stand_in, calls = recording_python(tmp_path)
    (tmp_path / "out" / "report").mkdir(parents=True)  # what the report would write
    ranked = "## Ranked by ...\n\n| 1.8 | pgd | p |\n| 1.7 | iaat | i |\n| 1.6 | iaat | j |\n"
    (tmp_path / "out" / "report" / "report.md").write_text(f"# r\n\n{ranked}\n## Next\n")
    result = subprocess.run(
        ["bash", "launch/iaat_search_mnist5k.sh", str(tmp_path / "out"), "0.3 0.5", "0.1 0.2", "9"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": str(stand_in), "VALIDATION": "500", "PGD_RADII": "0.4"},
    )
    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines()
    trained = [line for line in lines if "main --config" in line]
    evaluated = [line for line in lines if "--mode=evaluate" in line]
    grid = [f"iaat_eps{r}_gamma{g}_seed0" for r in ("0.3", "0.5") for g in ("0.1", "0.2")]
    assert [run_name(line) for line in trained] == ["pgd_eps0.4_seed0", *grid]
    for line in trained + evaluated:  # evaluation reads the held-out digits, never the test ones
        assert "--config.validation_examples=500" in line and "--config.num_epochs=9" in line
    assert "--config.gamma=0.2" in trained[2] and "--config.epsilon=0.5" in trained[3]
    assert len(evaluated) == 5 and all(line.endswith("--config.eval_suite=") for line in evaluated)
    assert lines[-1].startswith("-m iaat_jax.report") and lines[-1].count("_seed0") == 5
    assert ranked in result.stdout and result.stdout.endswith(
        "chosen (the best IAAT row):\n| 1.7 | iaat | i |\n"
    )


@pytest.mark.parametrize(
    "script, arguments, env, message",
    [
        ("search", ["0.3", "0.1 big"], {}, "gamma 'big' is not a number in [0, 1]"),
        ("search", ["0.3", "0.1", "0"], {}, "EPOCHS '0' is not a whole number >= 1"),
        ("search", [], {"VALIDATION": "0"}, "VALIDATION '0' is not a whole number >= 1"),
        ("frontier", ["0 one"], {}, "seed 'one' is not a whole number"),
        ("frontier", ["0", "0.3 1.5"], {}, "radius '1.5' is not a number in [0, 1]"),
        ("frontier", ["0", "0.3", "ten"], {}, "EPOCHS 'ten' is not a whole number"),
        (
            "frontier",
            ["0", ""],
            {"CLEAN": "0", "TRADES_RADII": "", "IAAT_RADII": ""},
            "error: nothing to train (no setting or no seed)",
        ),
    ],
)
def test_the_study_scripts_refuse_bad_arguments_in_one_line(
    tmp_path, script, arguments, env, message
):
    name = {"search": "iaat_search_mnist5k.sh", "frontier": "frontier_mnist5k.sh"}[script]
    result = subprocess.run(
        ["bash", f"launch/{name}", str(tmp_path), *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": "/nonexistent/python", **env},
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "logs").exists()


@pytest.mark.slow  # the notebook end to end: MNIST-5k and fake CIFAR-10 on 8 devices, ~2 min
def test_the_colab_notebook_runs_headless_on_cpu(data_dir, tmp_path, monkeypatch):
    import nbclient
    import nbformat

    notebook = nbformat.read(REPO / "launch" / "colab_tpu.ipynb", as_version=4)
    parameters = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    cifar = {
        "fake_data": True,  # the real input pipeline is tested elsewhere; no CIFAR here
        "model": "wrn8_1_iaat",
        "num_train_steps": 2,
        "num_epochs": 1,
        "warmup_epochs": 0,
        "batch_size": 8,
        "eval_batch_size": 8,
        "attack_steps": 2,
        "eval_attack_steps": 2,
        "sweep_epsilons": (0.0, 8 / 255),
        "sweep_attack_steps": 2,
    }
    parameters.source += f"""
# the test's values
INSTALL = False
WORKDIR = {str(tmp_path / "default")!r}
NUM_TRAIN_STEPS = 12
SWEEP_EPSILONS = (0.0, 0.3)
EVAL_SUITE = "smoke"
CIFAR_DATA_DIR = {str(tmp_path / "cifar_data")!r}
CIFAR_WORKDIR = {str(tmp_path / "cifar10")!r}
CIFAR_OVERRIDES = {cifar!r}
from iaat_jax.configs import default as _default
_get_config = _default.get_config
def _test_config():  # the embedded default on the test's TFDS copy, with cheaper attacks
    config = _get_config()
    config.update(data_dir={str(data_dir)!r}, attack_steps=2, eval_attack_steps=2)
    config.sweep_attack_steps = 2
    return config
_default.get_config = _test_config
"""
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()  # raises CellExecutionError, with the cell's traceback, if a cell fails
    outputs = {
        index: "".join(o.get("text", "") for o in cell.get("outputs", []))
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
    }
    text = "\n".join(outputs.values())
    assert "8 cpu devices" in text.lower() or "8 TFRT_CPU" in text
    assert "trained to step 12" in text
    assert "eps 0.30: robust accuracy" in text and "CIFAR-10 clean accuracy" in text
    images = [
        o
        for cell in notebook.cells
        for o in cell.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 5  # the default's four figures inline, and CIFAR-10's robustness curve
    assert (tmp_path / "default" / "eval.json").exists()
    assert (tmp_path / "cifar10" / "eval.json").exists()


def test_the_device_benchmark_prints_every_record_it_promises(tmp_path):
    """launch/device_benchmark.sh on CPU with a tiny model and batch (EXTRA): a record for each
    method of both configs, then one per BatchNorm policy, the collectives among them."""
    out = tmp_path / "bench.jsonl"
    extra = "--config.model=small_cnn --config.batch_size=8 --config.attack_steps=1 "
    extra += "--steps=1 --warmup_steps=0"
    result = subprocess.run(
        ["bash", "launch/device_benchmark.sh", str(out)],
        cwd=REPO,
        env={**os.environ, "EXTRA": extra, "PYTHON": sys.executable, "LIMIT": "300"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0 and "failed" not in result.stderr, result.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["dataset"], r["method"]) for r in records[:6]] == [
        (dataset, method) for dataset in ("cifar10", "imagenet2012") for method in METHODS
    ]
    assert all(r["images_per_second"] > 0 and r["compile_seconds"] > 0 for r in records[:6])
    policies = {r["attack_batchnorm"]: r["collectives_per_step"] for r in records[6:]}
    assert sorted(policies) == ["global", "local", "running"]
    assert policies["global"] > policies["local"] >= policies["running"] > 0


def gpu_venv(tmp_path, real_python: bool, installed: str = ""):
    """A VENV for launch/gpu.sh whose `python -m pip` records what it would do (nothing is
    downloaded); otherwise its python is this test's own (JAX on the CPU, no CUDA plugin) or,
    where not `real_python`, a recorder whose plugin check reports `installed` (two lines)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    calls = tmp_path / "calls.txt"
    python = venv / "bin" / "python"
    pip = f'if [ "$1 $2" = "-m pip" ]; then shift 2; echo "pip $*" >> {calls}; exit 0; fi\n'
    if real_python:
        python.write_text(f'#!/usr/bin/env bash\n{pip}exec {sys.executable} "$@"\n')
    else:  # the plugin check answers `installed`; training records its arguments
        check = f"printf '%s\\n' {installed or '- -'}"
        python.write_text(
            f'#!/usr/bin/env bash\n{pip}[ "$1" = -c ] && {{ {check}; exit 0; }}\n'
            f'echo "python $*" >> {calls}\n'
        )
    python.chmod(0o755)
    return venv, calls


def run_gpu_script(tmp_path, venv, *arguments, cwd=REPO, **env):
    return subprocess.run(
        ["bash", str(REPO / "launch" / "gpu.sh"), *arguments],
        cwd=cwd,
        env={**cli_env(), "VENV": str(venv), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_gpu_script_installs_the_cuda_plugin_into_a_cpu_venv_and_refuses_to_train_on_cpu(
    tmp_path,
):
    venv, calls = gpu_venv(tmp_path, real_python=True)
    result = run_gpu_script(tmp_path, venv, "configs/default.py", str(tmp_path / "run"))
    assert "jax[cuda13]==0.10.2" in calls.read_text()  # the existing venv gets the plugin
    assert result.returncode == 2, result.stderr
    error = result.stderr.strip().splitlines()
    assert error[-1] == (
        "error: JAX sees cpu devices, not gpu: install the CUDA plugin (launch/gpu.sh --setup) "
        "or pass --allow_cpu to gpu.sh"
    )
    assert not (tmp_path / "run").exists()


def test_gpu_script_resolves_paths_from_the_callers_directory_and_picks_the_cuda_major(tmp_path):
    venv, calls = gpu_venv(tmp_path, real_python=False)
    caller = tmp_path / "elsewhere"
    caller.mkdir()
    (caller / "my_config.py").write_text("")
    result = run_gpu_script(
        tmp_path,
        venv,
        "--allow_cpu",
        "my_config.py",
        "runs/a",
        "--config.data_dir=tfds",
        "--config.seed=1",
        cwd=caller,
        CUDA="12",
    )
    assert result.returncode == 0, result.stderr
    pip, train = calls.read_text().splitlines()
    assert pip.endswith("jax[cuda12]==0.10.2")
    assert train == (
        f"python -m iaat_jax.main --config={caller}/my_config.py --workdir={caller}/runs/a "
        f"--config.data_dir={caller}/tfds --config.seed=1"
    )  # --allow_cpu: no --require_platform


def test_gpu_script_setup_only_installs_and_swaps_the_cuda_major(tmp_path):
    venv, calls = gpu_venv(tmp_path, real_python=False, installed="0.10.2 0.10.2")
    assert run_gpu_script(tmp_path, venv, "--setup").returncode == 0
    assert calls.read_text().splitlines() == [  # cuda13 present; cuda12 too: removed
        "pip uninstall -q -y jax-cuda12-plugin jax-cuda12-pjrt"
    ]
    bad = run_gpu_script(tmp_path, venv, "--setup", CUDA="11")
    assert bad.returncode == 2 and "CUDA=11" in bad.stderr


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
