"""launch/: the study scripts (frontier, probe options, IAAT search), the Colab notebook run
headless, the device benchmark and gpu.sh (the TPU pod launcher: test_tpu_pod.py)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, cli_env

METHODS = ("clean", "pgd", "iaat")


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
        env={**os.environ, "PYTHON": str(stand_in), "IAAT_ARGS": "--config.iaat_gamma=0.05"},
    )
    assert result.returncode == 0, result.stderr
    trained = [line for line in calls.read_text().splitlines() if "main --config" in line]
    names = ["clean", "pgd_eps0.3", "pgd_eps0.45", "trades_eps0.3", "iaat_eps0.3"]
    assert [run_name(line) for line in trained] == [f"{n}_ep15_seed4" for n in names]
    methods = [line.split("--config.method=")[1].split()[0] for line in trained]
    assert methods == ["clean", "pgd", "pgd", "trades", "iaat"]
    assert all("--config.num_epochs=15" in line and "--config.seed=4" in line for line in trained)
    assert "--config.epsilon=0.45" in trained[2] and "--config.iaat_gamma=0.05" in trained[4]
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
    assert "--config.iaat_gamma=0.2" in trained[2] and "--config.epsilon=0.5" in trained[3]
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
        "iaat_warmup_epochs": 0,
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
