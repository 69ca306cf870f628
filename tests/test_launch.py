"""launch/: the TPU pod launcher (dry run and preemption handling), the frontier script's
arguments, the probe study's runs and the Colab notebook, run headless."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

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


def test_dry_run_prints_every_gcloud_command_of_a_v4_32_spot_slice(capsys):
    assert tpu_pod.main([*POD_ARGS, "--delete", "--dry_run", "--", "--config.seed=3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    commands = [line for line in lines if line.startswith(("gcloud", "git"))]
    zone = "--zone=us-central2-b"
    assert commands[0].startswith("gcloud compute tpus tpu-vm describe iaat")
    assert commands[1] == (
        "gcloud compute tpus tpu-vm create iaat --accelerator-type=v4-32 "
        f"--version=tpu-ubuntu2204-base --spot {zone}"
    )
    assert commands[2].startswith("git -C ") and " archive " in commands[2]
    assert commands[3].endswith(f"iaat:iaat_jax.tgz --worker=all {zone}")
    assert "ssh iaat --worker=all" in commands[4] and "'jax[tpu]==0.10.2'" in commands[4]
    train = commands[5]
    assert "ssh iaat --worker=all" in train and "python3 -m iaat_jax.main --multihost" in train
    assert "--workdir=gs://bucket/runs/imagenet --config.seed=3" in train
    fetches = commands[6:10]  # v4-32: 16 chips on 4 hosts, one log each
    for worker, fetch in enumerate(fetches):
        assert f"launch_logs/iaat/worker-{worker}.log --worker={worker} {zone}" in fetch
    assert commands[10:] == [f"gcloud compute tpus tpu-vm delete iaat --quiet {zone}"]
    assert all(c.endswith(zone) for c in commands if c.startswith("gcloud"))


class ScriptedCloud:
    """A runner that answers `describe` from a list of states and `ssh ... iaat_jax.main` from a
    list of exit statuses, and records every command."""

    def __init__(self, states, train_statuses):
        self.states, self.train_statuses, self.commands = list(states), list(train_statuses), []

    def __call__(self, argv, capture):
        self.commands.append(argv)
        if "describe" in argv:
            state = self.states.pop(0)
            return (1, "") if state == "NOT_FOUND" else (0, state + "\n")
        if any("iaat_jax.main" in a for a in argv):
            return self.train_statuses.pop(0), ""
        return 0, ""

    def verbs(self):
        """create / delete / train / install, in order (describe, scp and git left out)."""
        names = []
        for argv in self.commands:
            if "create" in argv or "delete" in argv:
                names.append("create" if "create" in argv else "delete")
            elif "ssh" in argv:
                names.append("train" if any("iaat_jax.main" in a for a in argv) else "install")
        return names


def launch(cloud, *extra):
    args = tpu_pod.parse_args([*POD_ARGS, "--log_dir=/tmp/iaat_launch_test", *extra])
    return tpu_pod.Launcher(args, cloud).run()


def test_a_preempted_slice_is_recreated_and_the_same_command_resumes():
    # reuse a READY slice; training dies with the slice (PREEMPTED); recreate, reinstall, rerun
    cloud = ScriptedCloud(["READY", "PREEMPTED", "PREEMPTED"], [255, 0])
    assert launch(cloud) == 0
    assert cloud.verbs() == ["install", "train", "delete", "create", "install", "train"]
    first, second = [a for a in cloud.commands if any("iaat_jax.main" in x for x in a)]
    assert first == second  # the same command: it resumes from the gs:// workdir


def test_a_failing_run_on_a_healthy_slice_stops_and_preemptions_are_bounded():
    cloud = ScriptedCloud(["READY", "READY"], [1])
    assert launch(cloud) == 1 and cloud.verbs() == ["install", "train"]
    always_preempted = ScriptedCloud(["READY"] + ["PREEMPTED"] * 10, [255] * 5)
    assert launch(always_preempted, "--max_retries=2") == 1
    assert always_preempted.verbs().count("train") == 3  # the first try and 2 recreations


@pytest.mark.parametrize(
    "kind, hosts",
    [("v2-8", 1), ("v3-32", 4), ("v4-32", 4), ("v5p-128", 16), ("v6e-8", 1)]
    + [("v5litepod-16", 4)],
)
def test_worker_count_of_each_slice(kind, hosts):
    assert tpu_pod.workers_of(kind) == hosts


def test_bad_launcher_input_is_one_line_and_exit_2():
    result = subprocess.run(
        ["python3", "launch/tpu_pod.py", *POD_ARGS[:-1], "--workdir=/local/dir"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "--workdir=/local/dir is not a gs:// path" in result.stderr.splitlines()[-1]


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
