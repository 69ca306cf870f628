"""The command line end to end, as a user runs it (one process, one CPU device)."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, cli_env, main_command


def run_cli(*args, cwd=REPO):
    """The CLI in a process of its own with one CPU device, run from `cwd` (a --config in
    `args` replaces the default one)."""
    env = cli_env()
    env["PYTHONPATH"] = str(REPO)
    config = (
        []
        if any(a.startswith("--config=") for a in args)
        else [f"--config={REPO}/configs/default.py"]
    )
    return subprocess.run(
        [sys.executable, "-m", "iaat_jax.main", *config, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def digest(directory):
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
    }


@pytest.mark.slow  # a whole epoch through the CLI, about 40 s
def test_cli_trains_one_epoch_then_refuses_bad_input_without_touching_the_run(data_dir, tmp_path):
    workdir = tmp_path / "run"
    result = run_cli(  # a relative --workdir, as in the README's command
        "--workdir=run",
        f"--config.data_dir={data_dir}",
        "--config.num_epochs=1",
        "--config.iaat_warmup_epochs=0",
        "--config.attack_steps=3",
        "--config.eval_attack_steps=3",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ETA" in result.stderr and "robust accuracy" in result.stderr
    table = np.load(workdir / "epsilon_table.npy")
    assert table.shape == (4000,) and table.dtype == np.float32 and table.max() > 0
    evals = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if "robust_accuracy" in r]
    assert (
        len(evals) == 1 and {"step", "epoch", "clean_accuracy", "epsilon_mean"} <= evals[0].keys()
    )
    assert (workdir / "checkpoints" / "50").is_dir()  # 4,000 digits / batch 80

    before = digest(workdir)
    bad = run_cli(f"--workdir={workdir}", f"--config.data_dir={data_dir}", "--config.epsilon=8")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: config.epsilon=8")
    assert digest(workdir) == before


def test_cli_names_both_numbers_when_the_batch_does_not_split(data_dir, tmp_path):
    env_devices = "--xla_force_host_platform_device_count=8"
    env = dict(os.environ, XLA_FLAGS=env_devices)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "iaat_jax.main",
            "--config=configs/default.py",
            f"--workdir={tmp_path}",
            f"--config.data_dir={data_dir}",
            "--config.batch_size=100",  # 100 does not split over 8
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2
    assert "batch_size=100 is not divisible by the 8 devices" in result.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config=/nonexistent/config.py"], "the config could not be loaded: [Errno 2]"),
        (["--config={broken}"], "the config could not be loaded: invalid syntax"),
        (
            ["--config.epsilom=0.3"],
            "error: unknown config field epsilom (did you mean epsilon?): the fields are in "
            "docs/config_fields.md",
        ),
        (
            ["--config.epsilon=abc"],
            "could not convert string to float: 'abc': the fields and their types are in "
            "docs/config_fields.md",
        ),
        (["--bogus=1"], "Unknown command line flag 'bogus' (python -m iaat_jax.main --help"),
        (["--config.iaat_gamma=nan"], "config.iaat_gamma=nan is not a finite number"),
        (
            ["--config.warmup_epochs=9"],  # its older name, renamed for the user
            "config.iaat_warmup_epochs=9 exceeds config.num_epochs=7",
        ),
        (["--mode=evaluate"], "holds no training run"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    args = [a.replace("{broken}", str(broken)) for a in args]
    result = run_cli(f"--workdir={tmp_path / 'run'}", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line[:1] not in ("I", "W")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "Traceback" not in result.stderr


def test_evaluating_a_directory_without_a_run_is_one_line_without_a_config():
    result = subprocess.run(
        [sys.executable, "-m", "iaat_jax.main", "--mode=evaluate", "--workdir=/nonexistent"],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: /nonexistent holds no training run (no config.json): pass the --workdir of a "
        "run, or --config=FILE"
    ]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_shows_every_mode_with_an_example_and_exits_0(flag):
    result = run_cli(flag)
    assert result.returncode == 0, result.stderr
    for example in (
        "--config=configs/default.py --workdir=DIR",
        "--mode=evaluate --workdir=DIR",
        "--mode=export --workdir=DIR",
        "python -m iaat_jax.report DIR",
    ):
        assert example in result.stdout
    assert "--require_platform" in result.stdout and "docs/config_fields.md" in result.stdout


@pytest.mark.slow  # trains 60 steps, then evaluates twice through the CLI, about 2 minutes
def test_evaluate_reads_the_runs_config_any_checkpoint_on_any_device_count(data_dir, tmp_path):
    workdir = tmp_path / "run"
    trained = run_cli(  # on one device, at a batch that does not split over 8
        f"--workdir={workdir}",
        f"--config.data_dir={data_dir}",
        "--config.batch_size=60",
        "--config.num_train_steps=60",
        "--config.num_epochs=1",
        "--config.iaat_warmup_epochs=0",
        "--config.attack_steps=2",
        "--config.eval_attack_steps=2",
        "--config.checkpoint_every_steps=30",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    env = dict(cli_env(8), PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "iaat_jax.main", "--mode=evaluate", f"--workdir={workdir}"]
    overrides = ["--config.eval_suite=smoke", "--config.sweep_epsilons=(0.0,0.3)"]
    run = lambda *args: subprocess.run(
        [*command, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    result = run("--step=30", *overrides)  # no --config: the run's own, with two overrides
    assert result.returncode == 0, result.stderr[-3000:]
    assert "evaluate: 8 devices" in result.stderr
    saved = json.loads((workdir / "eval.json").read_text())
    assert saved["checkpoint_step"] == 30 and saved["method"] == "iaat"
    assert [row["epsilon"] for row in saved["worst_case"]] == [0.0, 0.3]
    entry = saved["robustbench"]
    assert entry["eps"] == 0.3 and entry["n_examples"] == 1000 and entry["suite"] == "smoke"
    assert entry["split"] == saved["split"] == "test"
    assert list(entry["robust_acc_after"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert entry["autoattack_acc"] == saved["autoattack"][0]["attacks"][-1]["robust_accuracy"]
    worst = saved["worst_case"][1]  # over the sweep and the suite; each alone is no lower
    assert worst["robust_accuracy"] <= min(entry["autoattack_acc"], worst["pgd_robust_accuracy"])
    assert {"zero_gradient_examples", "randomness_suspected", "gradient_masking_suspected"} <= (
        saved["checks"].keys()
    )
    missing = run("--step=45", *overrides)
    assert missing.returncode == 2
    assert "no checkpoint at step 45" in missing.stderr and "steps 30, 60" in missing.stderr


@pytest.mark.slow  # two short CLI runs, about 25 s each (8 = 1 device: tests/method/test_step.py)
@pytest.mark.parametrize("devices", [1, 8])
def test_the_default_runs_on_one_and_eight_devices(devices, data_dir, tmp_path):
    result = subprocess.run(
        main_command(tmp_path, data_dir, "--config.num_train_steps=2"),
        cwd=REPO,
        env=cli_env(devices),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    # the console opens with what runs where, and no library noise (libtpu, oneDNN, TFDS)
    assert f"train: {devices} devices (cpu) on 1 hosts" in lines[0]
    assert f"in {tmp_path}: steps 0 to 2 (50 per epoch" in lines[1]
    assert f"global batch 80 on {devices} devices of 1 hosts" in lines[1]
    noise = ("libtpu", "Unable to initialize backend", "oneDNN", "absl::InitializeLog")
    assert not [line for line in lines if any(n in line for n in noise)]
    assert (tmp_path / "checkpoints" / "2").is_dir()


@pytest.mark.slow  # two short CLI runs, about 35 s
def test_rerunning_a_finished_run_says_so_and_builds_nothing(tmp_path):
    """A finished run is reported complete before any data or model is built (no 'Resumed'
    line, no compile), and exits 0; a changed config on it is still refused."""
    run = ["--config.fake_data=True", "--config.num_train_steps=2", "--config.method=clean"]
    first = run_cli(f"--workdir={tmp_path}", *run)
    assert first.returncode == 0, first.stderr[-2000:]
    again = run_cli(f"--workdir={tmp_path}", *run)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.strip() == (
        f"the run in {tmp_path} is already complete (step 2): nothing to train; evaluate it "
        f"with python -m iaat_jax.main --mode=evaluate --workdir={tmp_path}"
    )
    assert "Resumed from" not in again.stderr and "Training iaat" not in again.stderr
    longer = run_cli(f"--workdir={tmp_path}", *run[:2], "--config.batch_size=16")
    assert longer.returncode == 2 and "holds a run of another config" in longer.stderr
