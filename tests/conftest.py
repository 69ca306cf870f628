"""Shared fixtures. Every test process sees 8 fake CPU devices (set before JAX is imported)."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib  # noqa: E402
import sys  # noqa: E402

import ml_collections  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def pytest_addoption(parser):
    parser.addoption(
        "--slow",
        action="store_true",
        help="also run the tests marked slow (the full suite, as .ci/run does)",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: minutes of compiling or training; run with --slow (.ci/run does)"
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def cli_env(devices: int = 1) -> dict[str, str]:
    """The environment of a subprocess with `devices` CPU devices (1: the machine's own)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def main_command(workdir, data_dir, *args) -> list[str]:
    """python -m iaat_jax.main training configs/default.py in `workdir` on the test data."""
    return [
        sys.executable,
        "-m",
        "iaat_jax.main",
        "--config=configs/default.py",
        f"--workdir={workdir}",
        f"--config.data_dir={data_dir}",
        *args,
    ]


def load_config(name: str = "default") -> ml_collections.ConfigDict:
    """configs/<name>.py's get_config(), loaded the way the CLI loads it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"configs.{name}", REPO / "configs" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """A TFDS data_dir with the embedded MNIST-5k built once per test session."""
    path = tmp_path_factory.mktemp("tfds")
    from iaat_jax.data import input_pipeline
    from iaat_jax.data.datasets import DATASETS

    input_pipeline.get_builder(DATASETS["mnist5k"], str(path))
    return str(path)


@pytest.fixture
def fast_config(data_dir) -> ml_collections.ConfigDict:
    """The default config made cheap: PGD-2, 2 epochs (1 of warm-up), batch 80 (8 devices)."""
    config = load_config()
    config.data_dir = data_dir
    config.attack_steps = 2
    config.eval_attack_steps = 2
    config.num_epochs = 2
    config.iaat_warmup_epochs = 1
    config.batch_size = 80
    config.eval_batch_size = 200
    config.log_every_steps = 25
    return config


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory, data_dir) -> dict:
    """Tiny IAAT and PGD runs (1 epoch each), each evaluated with a 3-radius sweep.

    Returns {method: (workdir, the results evaluate_run returned)}.
    """
    from iaat_jax.evaluation import evaluate
    from iaat_jax.run import train

    runs = {}
    for method in ("iaat", "pgd"):
        config = load_config()
        config.update(
            dict(
                data_dir=data_dir,
                method=method,
                num_epochs=1,
                iaat_warmup_epochs=0,
                attack_steps=2,
                eval_attack_steps=2,
                batch_size=80,
                log_every_steps=25,
                sweep_epsilons=(0.0, 0.15, 0.3),
                sweep_attack_steps=3,
                eval_suite="smoke",
            )
        )
        workdir = tmp_path_factory.mktemp(method)
        train.train_and_evaluate(config, str(workdir))
        runs[method] = (workdir, evaluate.evaluate_run(config, str(workdir)))
    return runs
